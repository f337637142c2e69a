"""Faust's aiokafka transport with six changes: batches, fetch wait, retries, new logs, raw
reads, and handed-off partitions fetched less often.

1. **Batches.** Stock Faust turns every fetched record into a message and pushes it through
   its consumer loop one at a time: four asyncio tasks per message in `_drain_messages`
   (`wait_first(callback(message), suspend_flow.wait())`), then the conductor, the channel
   queue, an Event, sensors and an ack. That costs 75-150 us a message here, about 1/40 of
   what aiokafka itself needs. `_Consumer.getmany` instead hands each fetched batch of one
   partition to Faust as ONE message whose value is the list of aiokafka records, so those
   costs are paid per batch. Agents, consumer groups, rebalances and commits stay Faust's.
   The batch message carries the offset of its last record, and the commit moves past a
   batch exactly when the agent has acked that batch, never earlier (`_new_offset` below:
   Faust's own bookkeeping of the offsets between messages, its "gaps", is replaced; an
   ack of a batch fetched before the last rebalance does not count, `ack` below).
   Agents read `event.message.value`: a list of records with `.key`, `.value`, `.offset`,
   `.partition` and `.timestamp` (in ms); for a topic read raw, one `RawFetch` (item 5).
2. **Fetch wait.** Faust creates its consumer with `fetch_max_wait_ms=1500`. On Apache Kafka
   a waiting fetch returns as soon as data arrives, but Tansu's memory engine holds it for
   the whole wait (measured: 250-670 ms per message at 1500 ms; 2-11 ms at 20 ms). linkwatch
   has three consumer hops from a report to a visible alert, so the wait is cut to 25 ms. On
   Kafka this only costs more empty fetches on an idle partition.
3. **Unknown produce errors are retried, in order.** A producer that knew a topic before
   the embedded broker restarted empty gets UnknownError (-1) for its next sends there,
   where Kafka would answer UNKNOWN_TOPIC_OR_PARTITION, which is retriable: Tansu creates
   the topic on that first produce, and the send after succeeds (measured). aiokafka gives
   up on -1, and since it keeps one batch in flight per partition, the batches queued
   behind a failed one still land: retrying the failed one afterwards would reorder the
   partition. `_OrderedRetry` makes aiokafka's own retry take -1 too (with a metadata
   refresh), so the failed batch is sent again before anything behind it, until the
   producer's request timeout.
4. **A broker that came back empty is noticed before its data is read.** Offsets restart
   at 0 in the new logs, and a consumer that carries on from its old positions would skip
   the first reports sent again, or take them out of order, or (past a new log's end) read
   nothing at all. So after any broken connection and after every rebalance the consumer
   checks, before it hands over another batch or commits, and within a second when
   nothing comes, that each assigned partition still starts with the record it started
   with (`log_replaced`). If one does not, the worker restarts in place (same process,
   `os.execv`): all state is dropped, as after a SIGKILL, and rebuilt from what the
   broker has now.
5. **The reports topic is read raw** (streams/fetched.py). Each fetch of one of its
   partitions is one `RawFetch`, the bytes Kafka sent, rather than one aiokafka record
   per report: the intake process reads the records. The consumer's value deserializer
   (`RawTopics`) names the topics read so; the app's `raw_topics` says which.
6. **Handed-off partitions are fetched less often.** A message a worker produced to a
   partition it owns is applied once Kafka acknowledges it (the local hand-off,
   agents/replay.py); the consumer fetches it back only so that the commit moves past it.
   Each such fetch still costs the broker, the consumer thread and the agent's loop, at
   every fetch (every few ms under a live feed). So a partition the app says is handed off
   (`fetch_rarely(topic, partition)`) joins a fetch at most every HANDED_OFF_FETCH_EVERY
   seconds; the others are fetched as before. Nothing else changes: the consumer still
   reads every message in order, and the commit trails the hand-off by that much more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import faust
from aiokafka.conn import CloseReason
from aiokafka.errors import KafkaError, UnknownError
from aiokafka.producer import sender as aiokafka_sender
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.fetched import RawTopics, read_raw
from streams.memory import exec_again

__all__ = ["FETCH_MAX_WAIT_MS", "LinkwatchApp", "first_record", "log_replaced", "restart_in_place"]

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 25
# A handed-off partition joins a fetch at most this often (seconds): item 6.
HANDED_OFF_FETCH_EVERY = 0.25
# How long the consumer waits to learn whether the logs survived a broken connection
# before it restarts anyway (a restart is always safe: it is what a SIGKILL leads to).
VERIFY_PATIENCE = 30.0

FirstRecord = tuple[int, int] | None  # (offset, timestamp) of a log's first record; None: empty


def first_record(found: Any) -> FirstRecord:
    """From `offsets_for_times({tp: 0})`: Kafka answers None for an empty partition, Tansu
    an entry with timestamp -1."""
    return (found.offset, found.timestamp) if found and found.timestamp >= 0 else None


def log_replaced(before: FirstRecord, now: FirstRecord) -> bool:
    """A partition that started with `before` and starts with `now` is a new log: empty, or
    starting lower, or with another record at the same offset. (Retention only ever moves
    the start on.)"""
    if before is None or now == before:
        return False
    return now is None or now[0] < before[0] or now[0] == before[0]


def restart_in_place(why: str) -> None:
    """Replace this process with a fresh worker: the same pid, arguments and log."""
    log.critical("restarting the worker in place: %s", why)
    exec_again()


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    broken = False  # a connection to the broker broke since the logs were last checked

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads these when the consumer starts its fetcher (after this returns).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._value_deserializer = RawTopics(getattr(self.app, "raw_topics", ()))  # item 5
        client = consumer._client
        on_closed = client._on_connection_closed  # connections made later call this

        def note_closed(conn: Any, reason: Any) -> None:
            if reason not in (CloseReason.SHUTDOWN, CloseReason.IDLE_DROP):
                self.broken = True
            on_closed(conn, reason)

        client._on_connection_closed = note_closed
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = self._ensure_consumer()._fetcher  # made by the consumer's start
        fetch_rarely = getattr(self.app, "fetch_rarely", None)
        if fetch_rarely is not None:
            fetcher._get_actions_per_node = FewerFetches(
                fetcher._get_actions_per_node, fetch_rarely
            )  # item 6

    async def first_records(self, tps: Iterable[TP]) -> dict[TP, FirstRecord]:
        found = await self.call_thread(
            self._ensure_consumer().offsets_for_times, {tp: 0 for tp in tps}
        )
        return {tp: first_record(entry) for tp, entry in found.items()}


class FewerFetches:
    """aiokafka's fetch planning (`Fetcher._get_actions_per_node`), with the partitions that
    `fetch_rarely(topic, partition)` names left out of every fetch but one each `every`
    seconds (item 6). The planning sees every partition again once it has put one of them
    in a fetch request: until then (a fetch to the broker still in flight) they stay due."""

    def __init__(
        self,
        plan: Callable[[Any], tuple[Any, ...]],
        fetch_rarely: Callable[[str, int], bool],
        every: float = HANDED_OFF_FETCH_EVERY,
    ) -> None:
        self.plan = plan
        self.fetch_rarely = fetch_rarely
        self.every = every
        self._due = 0.0  # monotonic time the rare partitions may next be fetched

    def __call__(self, assignment: Any) -> tuple[Any, ...]:
        rare = {tp for tp in assignment.tps if self.fetch_rarely(tp.topic, tp.partition)}
        if not rare:
            return self.plan(assignment)
        now = time.monotonic()
        if now < self._due:
            return self.plan(_Without(assignment, rare))
        actions = self.plan(assignment)
        fetched = {(topic, entry[0]) for _, request in actions[0]
                   for topic, partitions in request.topics for entry in partitions}  # fmt: skip
        if any((tp.topic, tp.partition) in fetched for tp in rare):
            self._due = now + self.every
        return actions


class _Without:
    """An aiokafka assignment that plans without some of its partitions."""

    def __init__(self, assignment: Any, left_out: set[Any]) -> None:
        self._assignment = assignment
        self.tps = [tp for tp in assignment.tps if tp not in left_out]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._assignment, name)


class _Consumer(faust_aiokafka.Consumer):
    _thread: _ConsumerThread
    _starts: dict[TP, FirstRecord] | None = None  # what each assigned partition starts with
    _next_check = 0.0  # monotonic time of the next check without fetched data
    _next_learn = 0.0  # monotonic time a partition that was empty may next be learned

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        # A new assignment: check its partitions before reading on. What the ones this
        # worker had already read started with is kept: the rebalance that follows a
        # broker's restart must not make the new logs look like the ones it knew.
        self._thread.broken = True
        return committed

    async def _logs_checked(self, patience: float = VERIFY_PATIENCE) -> bool:
        """True once the assigned partitions are known to be the logs this worker read
        (module doc, item 4); False if the broker could not say within `patience` seconds.
        Restarts the worker in place if one is a new log."""
        if self._starts is not None and not self._thread.broken:
            return True
        if not self.assignment():
            return True  # nothing to read: check once partitions are assigned
        deadline = time.monotonic() + patience
        while True:
            self._thread.broken = False
            try:
                now = await self._thread.first_records(self.assignment())
                break
            except KafkaError as exc:
                self._thread.broken = True
                if time.monotonic() >= deadline:
                    log.warning("could not check the logs after a broken connection: %r", exc)
                    return False
                await asyncio.sleep(0.5)
        if self._starts is not None:
            starts = self._starts
            replaced = [tp for tp, first in now.items()
                        if tp in starts and log_replaced(starts[tp], first)]  # fmt: skip
            if replaced:
                names = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in replaced))
                restart_in_place(f"the broker has new logs ({names}): it restarted empty")
            log.info("checked the logs after a broken connection or a rebalance: unchanged")
            # A partition that was empty keeps what it starts with now; partitions revoked
            # meanwhile keep what they started with, for when they come back.
            now = starts | {tp: starts.get(tp) or first for tp, first in now.items()}
        self._starts = now
        return True

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # Offsets of the old logs committed to new ones would skip the reports sent again;
        # if the broker cannot say now, this commit waits for the next.
        if not await self._logs_checked(patience=0.0):
            return False
        return bool(await super()._commit(offsets))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """One Faust message per fetched batch of each partition (see the module doc)."""
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            # As Faust does: back to the committed offsets. A rebalance can revoke a
            # partition between the flow check and the seek (aiokafka then raises
            # IllegalStateError); Faust logs it and carries on, since the assignment that
            # follows seeks every partition it gives to its committed offset anyway.
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning("exception performing seek when flow not active: %r", exc)
            return
        if any(records.values()):
            starts, now = self._starts or {}, time.monotonic()
            if now >= self._next_learn and any(
                batch and starts.get(tp) is None for tp, batch in records.items()
            ):
                # Data where there was none: learn how the log starts (at most once a
                # second, for a log whose records carry no timestamps).
                self._thread.broken, self._next_learn = True, now + 1.0
            if not await self._logs_checked():
                # Fetched, but the broker cannot say which logs they came from: start again
                # rather than risk reading a new log from old positions.
                restart_in_place("could not check the logs after a broken connection")
        elif self._thread.broken and time.monotonic() >= self._next_check:
            # Nothing fetched: old positions past the end of a new log read nothing (Tansu
            # answers an empty fetch, not OFFSET_OUT_OF_RANGE), so check without data too.
            self._next_check = time.monotonic() + 1.0
            await self._logs_checked(patience=0.0)
        generation_id = self.app.consumer_generation_id
        for tp, batch in records.items():
            if not batch:
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break  # a rebalance started: Faust seeks back to the committed offsets
            paused = active_partitions is not None and tp not in active_partitions
            if paused and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            last = batch[-1]
            # Kafka gives milliseconds; Faust messages carry seconds.
            timestamp = last.timestamp / 1000.0 if last.timestamp is not None else time.time()
            value: Any = list(batch)  # the records themselves, not bytes (see the module doc)
            message = ConsumerMessage(
                last.topic,
                last.partition,
                last.offset,
                timestamp,
                last.timestamp_type,
                [],
                None,
                value,
                None,
                0,
                sum(record.serialized_value_size for record in batch),
                tp,
                generation_id=generation_id,
            )
            yield tp, message

    def ack(self, message: Any) -> bool:
        """Faust's ack, except for a message fetched before the last rebalance.

        Faust's stream acks such a message when it skips it unprocessed (so that lag does not
        grow), and the assignment that follows seeks back to the committed offset, so it is
        fetched again. Its ack must not count: `_new_offset` below commits past the highest
        acked offset, and this one would take the commit past reports not yet processed
        again. A copy fetched before the rebalance and processed after it is not counted
        either; the copy fetched again is, once processed."""
        if message.generation_id in (None, self.app.consumer_generation_id):
            return bool(super().ack(message))
        with ack_lock:  # Faust's own lock for this bookkeeping
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                notify(self._waiting_for_ack)  # `wait_empty` may be waiting for it
            return False

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Nothing: `_new_offset` below does not read gaps. Faust's version builds an
        IntervalTree and yields to the loop once per fetched batch (4% of the worker's time
        at half the sustainable rate, where batches are small)."""

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit for `tp`: one past the highest acked batch.

        Faust's version counts offsets one by one and fills the offsets before each message
        from the gaps `_drain_messages` records. With a whole batch per message that fails
        twice: the gap it records for a batch includes the batch's own offset, which is
        acked too, and the duplicate ends the run of consecutive offsets, so one commit
        moves past one batch only (under load the commit falls further and further behind,
        and the list of acked offsets grows without bound); and after a batch that ended
        at offset 0 it records no gap at all (`if gap > 1 and r_offset` is false for 0),
        so that partition is never committed again. Here a partition's batches are acked
        in order (one agent reads each topic, and `take_events` acks its events in order),
        so everything up to the highest acked offset has been processed."""
        acked = self._acked[tp]
        if not acked:
            return None
        offset = max(acked)
        acked.clear()
        self._acked_index[tp].clear()
        return int(offset) + 1


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _IdempotentProducer(faust_aiokafka.Producer):
    """acks=all with idempotence (`LINKWATCH_IDEMPOTENT_PRODUCER`, for Apache Kafka): a
    retried send is not written twice. Faust turns it on only for exactly-once processing,
    and aiokafka's idempotent producer needs InitProducerId, which the embedded broker
    (Tansu) rejects; so it is a setting, on in deploy/, off by default."""

    def _settings_extra(self) -> Any:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _IdempotentTransport(faust_aiokafka.Transport):
    Producer = _IdempotentProducer


class _OrderedRetry(aiokafka_sender.SendProduceReqHandler):  # type: ignore[misc]
    """aiokafka's produce handler, retrying UnknownError like a retriable error (module doc)."""

    def _can_retry(self, error: Any, batch: Any) -> bool:
        if isinstance(error, UnknownError) and not batch.expired():
            self._client.force_metadata_update()
            return True
        return bool(super()._can_retry(error, batch))


def retry_unknown_errors_in_order() -> None:
    """Make every aiokafka producer in this process use `_OrderedRetry` (idempotent)."""
    aiokafka_sender.SendProduceReqHandler = _OrderedRetry


class LinkwatchApp(faust.App):
    """faust.App on the transport above (only `kafka://` URLs are used by linkwatch)."""

    idempotent_producer = False
    raw_topics: frozenset[str] = frozenset()  # topics whose fetches agents get whole (item 5)
    fetch_rarely: Callable[[str, int], bool] | None = None  # handed-off partitions (item 6)

    def _new_transport(self) -> Any:
        retry_unknown_errors_in_order()
        read_raw()
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        if self.idempotent_producer:
            return _IdempotentTransport(self.conf.broker_producer, self)
        return super()._new_producer_transport()
