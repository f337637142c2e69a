"""Kafka plumbing outside Faust: topic creation, and reading partitions to their true end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError as AdminError
from kafka.errors import TopicAlreadyExistsError

from graph.records import partition_of
from streams.settings import Settings
from streams.transport import FETCH_MAX_WAIT_MS, FirstRecord, first_record, log_replaced

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_CONFIG",
    "actor_partition",
    "create_topics",
    "read_partitions",
]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


# The largest message the worker produces, and the topics it writes whole records of
# unbounded size to take: an absorb carries a whole actor (about 226 bytes an edge, so
# 1 MB at about 4,600 victims), an alert lists every report behind it, and a rejection is
# a copy of the rejected message with three headers. Kafka's default is 1 MB. Internal
# packs stay at most 512 KiB (agents/children.py:PACK_BYTES), and the reports topic keeps
# the broker's default, so a rejected copy always fits.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The topic config that sets a topic's largest message.
MAX_MESSAGE_CONFIG = "max.message.bytes"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Retention per topic. Reports are kept one window plus a week: the worker rebuilds its
    graph by replaying them, so they must outlive the window. Alerts are kept forever: they
    are the record of which alert ids exist. The topics that can get a record larger than
    Kafka's default 1 MB take MAX_MESSAGE_BYTES. With `min_insync_replicas` set, every topic
    gets it, so a write acked with acks=all is on that many brokers."""
    keep_reports = str(int(settings.window_seconds * 1000) + 7 * _DAY_MS)
    large = {MAX_MESSAGE_CONFIG: str(MAX_MESSAGE_BYTES)}
    configs = {
        settings.reports_topic: {"retention.ms": keep_reports},
        settings.identity_topic: {"retention.ms": keep_reports},
        settings.actor_reports_topic: {"retention.ms": keep_reports, **large},
        settings.rejected_topic: {"retention.ms": str(30 * _DAY_MS), **large},
        settings.alerts_topic: {"retention.ms": "-1", **large},
        settings.hubs_topic: {"retention.ms": "-1"},
        settings.keys_topic: {"retention.ms": "-1"},
        settings.alert_events_topic: {"retention.ms": "-1"},
        settings.audit_topic: {"retention.ms": "-1"},
        settings.workers_topic: {"retention.ms": str(_DAY_MS)},
    }
    if settings.min_insync_replicas is not None:
        for config in configs.values():
            config["min.insync.replicas"] = str(settings.min_insync_replicas)
    return configs


def partition_count(settings: Settings, topic: str) -> int:
    """One partition where one total order matters (the alias resolver, shared state)."""
    return 1 if topic in settings.single_partition_topics else settings.partitions


def actor_partition(actor_id: str, partitions: int) -> int:
    """The actor-reports partition of an actor: CRC-32 of its id (graph/records.py).

    linkwatch always names the partition it writes to, so this need not be Kafka's key
    partitioner; aiokafka's murmur2 is pure Python and cost 3% of the worker's time."""
    return partition_of(actor_id, partitions)


def create_topics(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet, with `settings.replication_factor` copies;
    returns the names created. An existing topic is left as it is, and one that should take
    large records and does not is logged with the command that fixes it."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="linkwatch-admin")
    try:
        created = []
        wanted = topic_configs(settings)
        for name, configs in wanted.items():
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partition_count(settings, name),
                            settings.replication_factor,
                            topic_configs=configs,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        large = [name for name, configs in wanted.items() if MAX_MESSAGE_CONFIG in configs]
        _check_large(admin, [name for name in large if name not in created])
        return created
    finally:
        admin.close()


def _check_large(admin: KafkaAdminClient, topics: list[str]) -> None:
    """Warn of each of these existing topics that takes messages smaller than
    MAX_MESSAGE_BYTES (one made before linkwatch asked for it): a record over its limit
    stops the worker."""
    if not topics:
        return
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics],
            config_filter="all",
        ).get("topic", {})
    except (AdminError, OSError) as error:  # a broker without the request: only a check
        log.warning("could not read the topics' max.message.bytes (%s)", error)
        return
    for name in topics:
        value = found.get(name, {}).get(MAX_MESSAGE_CONFIG, {}).get("value")
        if not str(value).isdigit() or int(value) < MAX_MESSAGE_BYTES:
            limit = f"{value} bytes" if value else "the broker's default (1 MB unless set)"
            log.warning(
                "%s takes messages of at most %s, and linkwatch may write records of up to "
                "%d bytes there (deploy/README.md, Topics); a worker stops at the first one "
                "over. Raise it: kafka-configs.sh --alter --entity-type topics --entity-name "
                "%s --add-config max.message.bytes=%d",
                name, limit, MAX_MESSAGE_BYTES, name, MAX_MESSAGE_BYTES,
            )  # fmt: skip


async def read_partitions(
    bootstrap: str,
    topic: str,
    partitions: Sequence[int] | None = None,
    *,
    start: Mapping[int, int] | None = None,
    stop: Mapping[int, int] | None = None,
    follow: bool = False,
    caught_up: asyncio.Event | None = None,
    stall_timeout: float = 30.0,
    fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AsyncIterator[list[Any]]:
    """Yield batches of records from `topic`, without a consumer group.

    With `stop` (exclusive offsets, known to exist) it reads each partition up to there.
    Without it, it reads until caught up: past the reported end offset *and* until a fetch
    comes back empty, because a broker (Tansu's memory engine, measured) may report a
    partition's end too low. With `follow` it never stops, and sets `caught_up` once it has
    read what was there when it started; a partition whose log was replaced (`LogStarts`)
    is read again from its start. `fetch_wait_ms` is how long the broker may hold an
    empty fetch (`Followed` waits longer than the pipeline: streams/shared.py).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=fetch_wait_ms,
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    try:
        if partitions is None:
            partitions = sorted(await _partitions(consumer, topic))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if start is not None and tp.partition in start:
                consumer.seek(tp, start[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        if stop is not None:
            pending = {tp for tp in tps if stop.get(tp.partition, 0) > 0}
        else:
            ends = await consumer.end_offsets(tps)
            pending = set(tps)
        progress_at = time.monotonic()
        starts = LogStarts(consumer, tps) if follow else None
        while pending or follow:
            if starts is not None:
                for tp in await starts.replaced():
                    log.warning("%s[%d] was replaced by a new log: reading it from its start",
                                tp.topic, tp.partition)  # fmt: skip
                    await consumer.seek_to_beginning(tp)
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            records = [record for batch in batches.values() for record in batch]
            if stop is not None:
                records = [r for r in records if r.offset < stop[r.partition]]
            if records:
                progress_at = time.monotonic()
                yield records
            for tp in list(pending):
                position = await consumer.position(tp)
                if stop is not None:
                    done = position >= stop[tp.partition]
                else:
                    done = position >= ends[tp] and not batches.get(tp)
                if done:
                    pending.discard(tp)
                    if not follow:
                        consumer.pause(tp)
            if not pending and caught_up is not None:
                caught_up.set()
            if stop is not None and pending and time.monotonic() - progress_at > stall_timeout:
                raise TimeoutError(f"no progress reading {topic} for {stall_timeout:.0f}s")
    finally:
        await consumer.stop()


class LogStarts:
    """Tells when a partition's log was replaced under a reader: the embedded broker comes
    back from a restart with new, empty logs whose offsets start again at 0, below the
    reader's position, and a fetch there returns nothing rather than an error. Each check
    (every CHECK_EVERY seconds) asks for the first record's offset and timestamp; a
    replaced log starts with a different record, or is empty, or starts lower. (Apache
    Kafka keeps its logs across restarts: there the check only costs a request.)"""

    CHECK_EVERY = 3.0

    def __init__(self, consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> None:
        self._consumer = consumer
        self._tps = list(tps)
        self._first: dict[TopicPartition, FirstRecord] = {}
        self._next_check = 0.0

    async def replaced(self) -> list[TopicPartition]:
        if time.monotonic() < self._next_check:
            return []
        self._next_check = time.monotonic() + self.CHECK_EVERY
        try:
            found = await self._consumer.offsets_for_times({tp: 0 for tp in self._tps})
        except KafkaError as exc:  # the broker is away, or the topic not back yet
            log.info("could not check where %s starts: %r", self._tps[0].topic, exc)
            return []
        replaced = []
        for tp in self._tps:
            before, now = self._first.get(tp), first_record(found.get(tp))
            self._first[tp] = now if before is None or now is not None else before
            if log_replaced(before, now) and await self._consumer.position(tp) > (
                now[0] if now else 0
            ):
                replaced.append(tp)
                self._first[tp] = now
        return replaced


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    if topic not in await consumer.topics():
        raise LookupError(f"topic {topic} does not exist: run `linkwatch topics`")
    return set(consumer.partitions_for_topic(topic) or ())
