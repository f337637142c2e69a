"""Kafka plumbing outside Faust: topic creation, and reading partitions to their true end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.transport import FETCH_MAX_WAIT_MS

__all__ = ["create_topics", "read_partitions"]

_DAY_MS = 86_400_000


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Retention per topic. Reports are kept one window plus a week: the worker rebuilds its
    graph by replaying them, so they must outlive the window. Alerts are kept forever: they
    are the record of which alert ids exist."""
    keep_reports = str(int(settings.window_seconds * 1000) + 7 * _DAY_MS)
    return {
        settings.reports_topic: {"retention.ms": keep_reports},
        settings.identity_topic: {"retention.ms": keep_reports},
        settings.actor_reports_topic: {"retention.ms": keep_reports},
        settings.rejected_topic: {"retention.ms": str(30 * _DAY_MS)},
        settings.alerts_topic: {"retention.ms": "-1"},
        settings.hubs_topic: {"retention.ms": "-1"},
    }


def partition_count(settings: Settings, topic: str) -> int:
    """The identity topic has one partition, so the alias resolver sees one total order."""
    return 1 if topic == settings.identity_topic else settings.partitions


def create_topics(settings: Settings, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="linkwatch-admin")
    try:
        created = []
        for name, configs in topic_configs(settings).items():
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partition_count(settings, name),
                            replication,
                            topic_configs=configs,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


async def read_partitions(
    bootstrap: str,
    topic: str,
    partitions: Sequence[int] | None = None,
    *,
    start: Mapping[int, int] | None = None,
    stop: Mapping[int, int] | None = None,
    follow: bool = False,
    stall_timeout: float = 30.0,
) -> AsyncIterator[list[Any]]:
    """Yield batches of records from `topic`, without a consumer group.

    With `stop` (exclusive offsets, known to exist) it reads each partition up to there.
    Without it, it reads until caught up: past the reported end offset *and* until a fetch
    comes back empty, because a broker (Tansu's memory engine, measured) may report a
    partition's end too low. With `follow` it never stops.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
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
        while pending or follow:
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
                if done and not follow:
                    pending.discard(tp)
                    consumer.pause(tp)
            if stop is not None and pending and time.monotonic() - progress_at > stall_timeout:
                raise TimeoutError(f"no progress reading {topic} for {stall_timeout:.0f}s")
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    if topic not in await consumer.topics():
        raise LookupError(f"topic {topic} does not exist: run `linkwatch topics`")
    return set(consumer.partitions_for_topic(topic) or ())
