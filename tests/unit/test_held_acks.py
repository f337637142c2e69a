"""An agent's takes acked once Kafka has what they produced, in the order taken, while the
agent works its next take (agents/replay.py:HeldAcks): the commit never passes a report
whose output Kafka does not have."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from agents.replay import HeldAcks


class _Message:
    """As Faust's: one reference per stream that received it; the last ack commits it."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.refcount = 1

    def incref(self) -> None:
        self.refcount += 1


class _Event:
    def __init__(self, offset: int) -> None:
        self.message = _Message(offset)


class _Stream:
    """Faust's `Stream.ack`: takes one reference; at none left, the offset counts as
    processed (what `_new_offset` commits past)."""

    def __init__(self) -> None:
        self.committed: list[int] = []

    async def ack(self, event: _Event) -> None:
        event.message.refcount -= 1
        assert event.message.refcount >= 0, "acked more often than received"
        if event.message.refcount == 0:
            self.committed.append(event.message.offset)


async def _take(
    stream: _Stream, acks: HeldAcks, offsets: list[int], deliveries: list[asyncio.Future[None]]
) -> None:
    """One turn of an agent: hold the take's acks, then Faust acks the take's events as the
    agent asks for its next (`Stream.take_events`)."""
    events = [_Event(offset) for offset in offsets]
    await acks.hold(events, deliveries)
    for event in events:
        await stream.ack(event)


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_takes_are_committed_in_order_once_their_sends_are_acknowledged() -> None:
    async def run() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        stream = _Stream()
        acks = HeldAcks(stream, in_flight=2)
        first, second = loop.create_future(), loop.create_future()
        await _take(stream, acks, [0, 1], [first])
        await _take(stream, acks, [2], [second])
        seen = [list(stream.committed)]
        second.set_result(None)  # the later take's sends are acknowledged first
        await _turns()
        seen.append(list(stream.committed))
        first.set_result(None)
        await _turns()
        seen.append(list(stream.committed))
        return seen

    assert asyncio.run(run()) == [[], [], [0, 1, 2]]


def test_a_take_with_nothing_sent_is_committed_after_the_ones_before() -> None:
    async def run() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        stream = _Stream()
        acks = HeldAcks(stream, in_flight=2)
        first = loop.create_future()
        await _take(stream, acks, [0], [first])
        await _take(stream, acks, [1], [])  # e.g. every report in it was rejected
        await _turns()
        seen = [list(stream.committed)]
        first.set_result(None)
        await _turns()
        return [*seen, list(stream.committed)]

    assert asyncio.run(run()) == [[], [0, 1]]


def test_the_agent_waits_once_more_takes_than_allowed_await_their_sends() -> None:
    async def run() -> tuple[bool, bool, list[int]]:
        loop = asyncio.get_running_loop()
        stream = _Stream()
        acks = HeldAcks(stream, in_flight=1)
        first, second = loop.create_future(), loop.create_future()
        await _take(stream, acks, [0], [first])
        held = asyncio.ensure_future(_take(stream, acks, [1], [second]))
        await _turns()
        waited = not held.done()
        first.set_result(None)
        await _turns()
        went_on = held.done()
        second.set_result(None)
        await _turns()
        return waited, went_on, stream.committed

    assert asyncio.run(run()) == (True, True, [0, 1])


def test_a_failed_send_is_never_committed_past_and_fails_the_agent() -> None:
    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        stream = _Stream()
        acks = HeldAcks(stream, in_flight=1)
        failed, later = loop.create_future(), loop.create_future()
        await _take(stream, acks, [0], [failed])
        failed.set_exception(ConnectionError("the broker went away"))
        later.set_result(None)
        with pytest.raises(ConnectionError):
            await _take(stream, acks, [1], [later])  # the agent's next take
        await _turns()
        return stream.committed

    assert asyncio.run(run()) == []


def test_a_second_failed_take_is_not_committed_and_leaves_no_error_unretrieved() -> None:
    unretrieved: list[dict[str, Any]] = []

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: unretrieved.append(context))
        stream = _Stream()
        acks = HeldAcks(stream, in_flight=1)
        first, second = loop.create_future(), loop.create_future()
        await _take(stream, acks, [0], [first])
        first.set_exception(ConnectionError("the broker went away"))
        second.set_exception(ConnectionError("and stayed away"))
        with pytest.raises(ConnectionError, match="went away"):  # the first failure, once
            await _take(stream, acks, [1], [second])
        await _turns()
        return stream.committed

    assert asyncio.run(run()) == []
    gc.collect()  # a task that held an error nobody took reports it as it goes
    assert unretrieved == []
