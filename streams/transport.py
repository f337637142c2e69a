"""Faust's aiokafka transport with two changes: whole fetched batches, and a short wait.

1. **Batches.** Stock Faust turns every fetched record into a message and pushes it through
   its consumer loop one at a time: four asyncio tasks per message in `_drain_messages`
   (`wait_first(callback(message), suspend_flow.wait())`), then the conductor, the channel
   queue, an Event, sensors and an ack. That costs 75-150 us a message here, about 1/40 of
   what aiokafka itself needs. `_Consumer.getmany` instead hands each fetched batch of one
   partition to Faust as ONE message whose value is the list of aiokafka records, so those
   costs are paid per batch. Agents, consumer groups, rebalances and commits stay Faust's.
   The batch message carries the offset of its last record. Faust's `_drain_messages` then
   records the offsets before it as a gap, which its `_new_offset` counts as acked only
   once an offset past the gap start is acked: the commit moves past a batch exactly when
   the agent has acked that batch, never earlier. Agents read `event.message.value`: a list
   of records with `.key`, `.value`, `.offset`, `.partition` and `.timestamp` (in ms).
2. **Fetch wait.** Faust creates its consumer with `fetch_max_wait_ms=1500`. On Apache Kafka
   a waiting fetch returns as soon as data arrives, but Tansu's memory engine holds it for
   the whole wait (measured: 250-670 ms per message at 1500 ms; 2-11 ms at 20 ms). linkwatch
   has three consumer hops from a report to a visible alert, so the wait is cut to 25 ms. On
   Kafka this only costs more empty fetches on an idle partition.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerMessage

__all__ = ["FETCH_MAX_WAIT_MS", "LinkwatchApp"]

FETCH_MAX_WAIT_MS = 25


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts its fetcher (after this returns).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
        self._gap[tp].clear()
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


class LinkwatchApp(faust.App):
    """faust.App on the transport above (only `kafka://` URLs are used by linkwatch)."""

    idempotent_producer = False

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        if self.idempotent_producer:
            return _IdempotentTransport(self.conf.broker_producer, self)
        return super()._new_producer_transport()
