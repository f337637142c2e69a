"""State rebuilt by replay: what the resolver and graph agents share; and acks held past an
agent's next take (`HeldAcks`), which intake uses too.

A stateful stage here keeps its state in memory, one value per input partition it owns.
The state is a deterministic function of the partition's messages in order, so when a
partition is (re)assigned the worker rebuilds it before the first live message at offset O
by replaying offsets [0, O) with an aiokafka consumer outside the group. Everything before
O was committed, and Faust flushes the producer before it commits, so whatever those
messages produced is already in Kafka: replay rebuilds state and sends nothing, except
where a stage checks against what is already published (alerts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from streams.kafka import read_partitions

__all__ = [
    "TAKE",
    "WITHIN",
    "HeldAcks",
    "Message",
    "PartitionedState",
    "Send",
]

log = logging.getLogger(__name__)

S = TypeVar("S")

# Faust's producer.send(topic, key, value, partition, timestamp, headers) -> delivery future.
Send = Callable[..., Awaitable[Awaitable[Any]]]

# Each agent takes up to TAKE fetched batches (Faust events) at a time, waiting at most
# WITHIN seconds for more: enough to amortise producing, short enough for latency.
TAKE = 8
WITHIN = 0.01
# Takes whose sends may still await Kafka's acks while the agent works the next (`HeldAcks`).
IN_FLIGHT = 2


class Message(Protocol):
    """What Faust's live messages and aiokafka's replayed records both have."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def offset(self) -> int: ...


@dataclass(slots=True)
class _Partition(Generic[S]):
    state: S
    position: int  # the next offset to apply


class PartitionedState(Generic[S]):
    """Per-partition state of one input topic, owned by this worker and rebuilt on assignment.

    `create(partition)` makes empty state (it may read topics, e.g. published alerts);
    `apply(partition, state, message, replaying)` applies one message and returns the
    delivery futures of what it sent.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        create: Callable[[int], Awaitable[S]],
        apply: Callable[[int, S, Message, bool], Awaitable[list[Any]]],
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._create = create
        self._apply = apply
        self.owned: set[int] = set()
        self._partitions: dict[int, _Partition[S]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def states(self) -> list[S]:
        return [part.state for part in self._partitions.values()]

    @property
    def served(self) -> set[int]:
        """The owned partitions whose state is rebuilt: what a snapshot can show of them."""
        return {partition for partition in self.owned if partition in self._partitions}

    def assign(self, partitions: Iterable[int]) -> None:
        """A rebalance gave this worker `partitions`: forget the state of all others."""
        self.owned = set(partitions)
        for partition in list(self._partitions):
            if partition not in self.owned:
                del self._partitions[partition]

    def revoke(self, partitions: Iterable[int]) -> None:
        self.assign(self.owned - set(partitions))

    async def process(self, partition: int, message: Message) -> list[Any]:
        """Apply one live message; returns the delivery futures of what it sent."""
        if partition not in self.owned:
            return []  # revoked while buffered: its new owner processes it
        part = self._partitions.get(partition)
        if part is None or part.position < message.offset:
            if part is not None:
                # Never seen here: the consumer starts each assigned partition at the
                # committed offset, where its state was rebuilt to, and Kafka offsets are
                # contiguous. If it happens, the skipped messages are applied without
                # sending what they produce.
                log.warning("%s[%d]: live offset %d after %d: the messages between are "
                            "replayed", self.topic, partition, message.offset,
                            part.position)  # fmt: skip
            part = await self._catch_up(partition, message.offset)
        if message.offset < part.position:
            return []  # already applied during catch-up
        part.position = message.offset + 1
        return await self._apply(partition, part.state, message, False)

    async def rebuild(self, partition: int, committed: int) -> None:
        """Rebuild an owned partition's state up to its committed offset now, not at its
        next live message: a quiet partition is still read by snapshots and actor queries.
        The live path starts at `committed` too, and the partition's lock orders the two."""
        if partition in self.owned:
            await self._catch_up(partition, committed)

    async def _catch_up(self, partition: int, offset: int) -> _Partition[S]:
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            part = self._partitions.get(partition)
            if part is None:
                part = _Partition(await self._create(partition), 0)
            if part.position < offset:
                started, replayed = time.monotonic(), 0
                deliveries: list[Any] = []
                async for records in read_partitions(
                    self.bootstrap,
                    self.topic,
                    [partition],
                    start={partition: part.position},
                    stop={partition: offset},
                ):
                    for record in records:
                        if record.offset < part.position:
                            continue
                        part.position = record.offset + 1
                        deliveries += await self._apply(partition, part.state, record, True)
                        replayed += 1
                part.position = max(part.position, offset)
                await asyncio.gather(*deliveries)
                log.info(
                    "%s[%d]: replayed %d messages in %.2fs, sent %d",
                    self.topic,
                    partition,
                    replayed,
                    time.monotonic() - started,
                    len(deliveries),
                )
            if partition in self.owned:
                self._partitions[partition] = part
            return part


class HeldAcks:
    """Each take's events acked once Kafka has everything the take produced, in the order
    taken, while the agent goes on to its next take.

    Faust acks a take's events when the agent asks for the next one; an agent that awaited
    its sends first kept the next take (and its child process) waiting for Kafka's acks.
    Here each event's message is held (its refcount) past Faust's ack, and released in
    order once the take's deliveries are done, so the commit never passes a report whose
    output Kafka does not have. At most IN_FLIGHT takes wait so. A failed send fails the
    agent (and the worker) at its next take once the failed take's sends have all settled,
    where an awaited one failed it at once; until then neither that take nor any after it
    is acked, so a restart redoes them. Only the first failed take raises."""

    def __init__(self, stream: Any, in_flight: int = IN_FLIGHT) -> None:
        self.stream = stream
        self.in_flight = in_flight
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def hold(self, events: list[Any], deliveries: list[Any]) -> None:
        for event in events:
            event.message.incref()
        after = self._waiting[-1] if self._waiting else None
        self._waiting.append(asyncio.ensure_future(self._ack(events, deliveries, after)))
        while self._waiting and (len(self._waiting) > self.in_flight or self._waiting[0].done()):
            await self._waiting.popleft()

    async def _ack(
        self, events: list[Any], deliveries: list[Any], after: asyncio.Future[None] | None
    ) -> None:
        # Every delivery's outcome is taken here, so that a take's failure is raised once,
        # by the first take that failed, and nothing is left unretrieved behind it.
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        if after is not None:
            try:
                await after
            except BaseException:  # the take before failed: the agent fails on that one
                return  # and this take is not acked either
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        for event in events:
            await self.stream.ack(event)
