"""State rebuilt by replay: what the resolver and graph agents share; and acks held past an
agent's next take (`HeldAcks`), which intake uses too.

A stateful stage here keeps its state in memory, one value per input partition it owns.
The state is a deterministic function of the partition's messages in order, so when a
partition is (re)assigned the worker rebuilds it before the first live message at offset O
by replaying offsets [0, O) with an aiokafka consumer outside the group. Everything before
O was committed, and Faust flushes the producer before it commits, so whatever those
messages produced is already in Kafka: replay rebuilds state and sends nothing, except
where a stage checks against what is already published (alerts).

A message this worker produced to a partition it owns (intake's identity packs, the
resolver's actor-reports packs, the graph's absorbs) need not wait for the consumer to fetch
it back: once Kafka acknowledges it, its offset is known, and if that is the partition's
next the state applies it there and then (`offer`, the local hand-off). When the consumer
brings it later, `process` finds it applied and returns the deliveries it made, so the
agent's take is still acked only once Kafka has what it produced. Offsets are the one
order: a message offered ahead of a gap (another worker's, not yet fetched) waits for the
consumer to fill the gap, and one the consumer brought first is not applied again.

While a partition's messages all come by the hand-off, the consumer fetches them back only
to commit past them, so it fetches that partition less often (`handing_off`, used by
streams/transport.py, item 6); a message it brings that the hand-off had not applied (another
worker's, or one fetched before its acknowledgement came) puts the partition back to every
fetch for a while.
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
    "Produced",
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
# Messages offered to a partition and not yet applied, at most; past it the consumer brings
# them (a gap that the consumer has not filled yet holds back every offer behind it).
OFFERED_AT_MOST = 1000
# After the consumer brings a message the hand-off had not applied, the partition is fetched
# with every fetch for this long (seconds): another worker may be writing to it.
SHARED_FOR = 10.0


class Message(Protocol):
    """What Faust's live messages and aiokafka's replayed records both have."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def offset(self) -> int: ...


@dataclass(slots=True)
class Produced:
    """A message this worker produced, as Kafka acknowledged it: a `Message` for `offer`."""

    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int  # ms, as the consumer would read it


@dataclass(slots=True)
class _Partition(Generic[S]):
    state: S
    position: int  # the next offset to apply


class PartitionedState(Generic[S]):
    """Per-partition state of one input topic, owned by this worker and rebuilt on assignment.

    `create(partition)` makes empty state (it may read topics, e.g. published alerts);
    `apply(partition, state, message, replaying)` applies one message and returns the
    delivery futures of what it sent. `handed_off()` is called for each message applied
    from `offer` rather than from the consumer.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        create: Callable[[int], Awaitable[S]],
        apply: Callable[[int, S, Message, bool], Awaitable[list[Any]]],
        handed_off: Callable[[], None] = lambda: None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._create = create
        self._apply = apply
        self._handed_off = handed_off
        self.owned: set[int] = set()
        self._partitions: dict[int, _Partition[S]] = {}
        # A partition's catch-up and every apply to it hold its lock: one at a time, in order.
        self._locks: dict[int, asyncio.Lock] = {}
        # Per partition: offered messages by offset, not applied yet; the deliveries of
        # those applied, until the consumer brings them; the task applying them.
        self._offered: dict[int, dict[int, Produced]] = {}
        self._early: dict[int, dict[int, list[Any]]] = {}
        self._draining: dict[int, asyncio.Future[None]] = {}
        self._taking_offers = True  # until an offered message fails to apply
        # Per partition: when (monotonic) the consumer last brought a message not applied yet.
        self._brought_at: dict[int, float] = {}

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
                self._offered.pop(partition, None)
                self._early.pop(partition, None)
                self._brought_at.pop(partition, None)

    def revoke(self, partitions: Iterable[int]) -> None:
        self.assign(self.owned - set(partitions))

    def handing_off(self, partition: int) -> bool:
        """Whether the partition's messages come by the hand-off alone: its state is here,
        offers are taken, and for SHARED_FOR seconds the consumer has brought nothing that
        the hand-off had not applied. Read from the consumer's thread (a dict lookup)."""
        brought = self._brought_at.get(partition)
        return (
            self._taking_offers
            and partition in self._partitions
            and (brought is None or time.monotonic() - brought > SHARED_FOR)
        )

    def offer(self, message: Produced, partition: int) -> None:
        """Kafka has acknowledged `message`, which this worker produced to `partition`:
        apply it now if the partition's state is here and this is its next offset (or once
        the offsets before it are applied), rather than when the consumer fetches it."""
        part = self._partitions.get(partition)
        if part is None or not self._taking_offers or message.offset < part.position:
            return
        offered = self._offered.setdefault(partition, {})
        if len(offered) < OFFERED_AT_MOST:
            offered[message.offset] = message
            self._drain_soon(partition, part)

    def _drain_soon(self, partition: int, part: _Partition[S]) -> None:
        if part.position in self._offered.get(partition, ()) and partition not in self._draining:
            self._draining[partition] = asyncio.ensure_future(self._drain(partition, part))

    async def _drain(self, partition: int, part: _Partition[S]) -> None:
        """Apply the offered messages that continue the partition, in offset order. One that
        fails fails the agent when the consumer brings it (its take's deliveries)."""
        try:
            async with self._lock(partition):
                offered = self._offered.get(partition, {})
                early = self._early.setdefault(partition, {})
                while self._taking_offers and self._partitions.get(partition) is part:
                    message = offered.pop(part.position, None)
                    if message is None:
                        break
                    part.position = message.offset + 1
                    try:
                        early[message.offset] = await self._apply(
                            partition, part.state, message, False
                        )
                    except Exception as exc:
                        log.exception("%s[%d]: applying offset %d failed", self.topic,
                                      partition, message.offset)  # fmt: skip
                        failed = asyncio.get_running_loop().create_future()
                        failed.set_exception(exc)
                        early[message.offset] = [failed]
                        self._taking_offers = False
                    else:
                        self._handed_off()
                for offset in [offset for offset in offered if offset < part.position]:
                    del offered[offset]  # the consumer brought them first
        finally:
            del self._draining[partition]

    def _lock(self, partition: int) -> asyncio.Lock:
        lock = self._locks.get(partition)  # taken for every message: no Lock made to discard
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

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
        async with self._lock(partition):
            if message.offset < part.position:
                # Applied already: by the catch-up, or offered (its deliveries are here).
                early = self._early.get(partition)
                return early.pop(message.offset, []) if early else []
            self._brought_at[partition] = time.monotonic()
            part.position = message.offset + 1
            deliveries = await self._apply(partition, part.state, message, False)
        if self._offered.get(partition):
            self._drain_soon(partition, part)  # offers that waited for this one
        return deliveries

    async def rebuild(self, partition: int, committed: int) -> None:
        """Rebuild an owned partition's state up to its committed offset now, not at its
        next live message: a quiet partition is still read by snapshots and actor queries.
        The live path starts at `committed` too, and the partition's lock orders the two."""
        if partition in self.owned:
            await self._catch_up(partition, committed)

    async def _catch_up(self, partition: int, offset: int) -> _Partition[S]:
        async with self._lock(partition):
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
