"""A message the worker produced to a partition it owns is applied once Kafka acknowledges it
(agents/replay.py: `PartitionedState.offer`, the local hand-off): in offset order, once,
and the take that later brings it from the consumer still waits for what it produced."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from agents import replay
from agents.replay import PartitionedState, Produced


@dataclass
class _Fetched:
    """A message as the consumer brings it."""

    value: bytes
    offset: int
    key: bytes | None = None
    timestamp: int | None = None


class _Log:
    """A partition state that records what it applied, and a delivery future per message."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.applied: list[tuple[int, bytes]] = []
        self.deliveries: dict[int, asyncio.Future[None]] = {}
        self.handed_off = 0
        self.fail_at = fail_at
        self.state: PartitionedState[list[int]] = PartitionedState(
            "unused:9092", "topic", self._create, self._apply, self._count
        )

    async def _create(self, partition: int) -> list[int]:
        return []

    async def _apply(
        self, partition: int, state: list[int], message: Any, replaying: bool
    ) -> list[Any]:
        if message.offset == self.fail_at:
            raise ValueError("unreadable")
        await asyncio.sleep(0)  # as a send may: the next apply must still wait its turn
        self.applied.append((message.offset, message.value))
        self.deliveries[message.offset] = asyncio.get_running_loop().create_future()
        return [self.deliveries[message.offset]]

    def _count(self) -> None:
        self.handed_off += 1

    async def started(self) -> _Log:
        """Own partition 0, its state built (the consumer's first message at offset 0)."""
        self.state.assign([0])
        await self.state.rebuild(0, 0)
        return self


def _produced(offset: int) -> Produced:
    return Produced(None, b"m%d" % offset, offset, 1_700_000_000_000)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_acknowledged_message_is_applied_before_the_consumer_brings_it_and_only_once() -> None:
    async def run() -> None:
        log = await _Log().started()
        log.state.offer(_produced(0), 0)
        log.state.offer(_produced(1), 0)
        await _settle()
        assert log.applied == [(0, b"m0"), (1, b"m1")]
        assert log.handed_off == 2
        # The consumer brings them: not applied again, and each take gets the deliveries
        # its message made, so it is acked only once Kafka has them.
        assert await log.state.process(0, _Fetched(b"m0", 0)) == [log.deliveries[0]]
        assert await log.state.process(0, _Fetched(b"m1", 1)) == [log.deliveries[1]]
        assert await log.state.process(0, _Fetched(b"m2", 2)) == [log.deliveries[2]]
        assert log.applied == [(0, b"m0"), (1, b"m1"), (2, b"m2")]

    asyncio.run(run())


def test_offers_acknowledged_out_of_order_are_applied_in_offset_order() -> None:
    async def run() -> None:
        log = await _Log().started()
        for offset in (2, 1, 0):
            log.state.offer(_produced(offset), 0)
        await _settle()
        assert [offset for offset, _ in log.applied] == [0, 1, 2]

    asyncio.run(run())


def test_an_offer_behind_a_gap_waits_for_the_consumer_to_bring_the_gap() -> None:
    async def run() -> None:
        log = await _Log().started()
        log.state.offer(_produced(1), 0)  # offset 0 is another worker's
        await _settle()
        assert log.applied == []
        await log.state.process(0, _Fetched(b"theirs", 0))
        await _settle()
        assert log.applied == [(0, b"theirs"), (1, b"m1")]
        assert log.handed_off == 1

    asyncio.run(run())


def test_a_message_the_consumer_brought_first_is_not_applied_again_when_offered() -> None:
    async def run() -> None:
        log = await _Log().started()
        await log.state.process(0, _Fetched(b"m0", 0))
        log.state.offer(_produced(0), 0)
        await _settle()
        assert log.applied == [(0, b"m0")]
        assert log.handed_off == 0

    asyncio.run(run())


def test_nothing_is_applied_to_a_partition_not_owned_or_not_built() -> None:
    async def run() -> None:
        log = await _Log().started()
        log.state.offer(_produced(0), 1)  # never assigned here
        log.state.revoke([0])
        log.state.offer(_produced(0), 0)  # revoked
        await _settle()
        assert log.applied == []

    asyncio.run(run())


def test_an_offered_message_that_fails_fails_the_take_that_brings_it() -> None:
    async def run() -> None:
        log = await _Log(fail_at=1).started()
        for offset in (0, 1, 2):
            log.state.offer(_produced(offset), 0)
        await _settle()
        assert log.applied == [(0, b"m0")]  # and no more is taken from offers
        await log.state.process(0, _Fetched(b"m0", 0))
        (failed,) = await log.state.process(0, _Fetched(b"m1", 1))
        with pytest.raises(ValueError, match="unreadable"):
            await failed  # what HeldAcks awaits before it acks: the agent fails

    asyncio.run(run())


def test_a_partition_is_handed_off_until_the_consumer_brings_a_message_not_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`handing_off` tells the consumer it may fetch the partition less often (streams/
    transport.py, item 6): only while everything the consumer brings was applied already."""

    async def run() -> None:
        log = _Log()
        log.state.assign([0])
        assert not log.state.handing_off(0)  # no state yet: the consumer brings everything
        await log.state.rebuild(0, 0)
        assert log.state.handing_off(0)
        log.state.offer(_produced(0), 0)
        await _settle()
        await log.state.process(0, _Fetched(b"m0", 0))  # applied by the hand-off
        assert log.state.handing_off(0)
        await log.state.process(0, _Fetched(b"other", 1))  # another producer's message
        assert log.applied[-1] == (1, b"other")
        assert not log.state.handing_off(0)
        assert not log.state.handing_off(1)  # not owned
        now = replay.time.monotonic()
        monkeypatch.setattr(replay.time, "monotonic", lambda: now + replay.SHARED_FOR + 1)
        assert log.state.handing_off(0)

    asyncio.run(run())


def test_no_partition_is_handed_off_once_an_offer_failed() -> None:
    async def run() -> None:
        log = await _Log(fail_at=0).started()
        log.state.offer(_produced(0), 0)
        await _settle()
        assert not log.state.handing_off(0)  # the consumer must bring it, to fail the take
        [failed] = await log.state.process(0, _Fetched(b"m0", 0))
        with pytest.raises(ValueError):
            await failed

    asyncio.run(run())
