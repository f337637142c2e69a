"""Graph agent: apply actor-keyed reports to the rolling graph of their partition, raise alerts.

Where state lives: each actor-reports partition has one RollingGraph in this worker's memory.
It is not written anywhere else; it is rebuilt when a partition is (re)assigned by replaying
that partition from its beginning up to the first offset this worker is asked to process,
which works because the graph is a deterministic function of the partition's order.
Which alerts already exist is read back from the alerts topic (alerts for partition P are
always written to alerts partition P), so a replay or a redelivery never raises an alert
id twice, and an alert lost in a crash before it reached Kafka is raised on replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from graph.contract import Rejection, parse_report
from graph.rules import Alert, CrossRegionRule
from graph.window import RollingGraph
from streams.kafka import read_partitions
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["GraphPartitions", "make_graph_agent"]

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05

Send = Callable[..., Awaitable[Awaitable[Any]]]


@dataclass(slots=True)
class _Partition:
    graph: RollingGraph
    position: int  # the next actor-reports offset to apply


class GraphPartitions:
    """The rolling graphs of the actor-reports partitions this worker owns."""

    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.rule = CrossRegionRule(settings.min_regions)
        self.owned: set[int] = set()
        self._partitions: dict[int, _Partition] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def graphs(self) -> Iterable[RollingGraph]:
        return [part.graph for part in self._partitions.values()]

    def assign(self, partitions: Iterable[int]) -> None:
        """A rebalance gave this worker `partitions`: forget the graphs of all others."""
        self.owned = set(partitions)
        for partition in list(self._partitions):
            if partition not in self.owned:
                del self._partitions[partition]
        self.refresh_gauges()

    def revoke(self, partitions: Iterable[int]) -> None:
        self.assign(self.owned - set(partitions))

    async def process(
        self, partition: int, offset: int, key: bytes, value: bytes, ts: float
    ) -> list[Any]:
        """Apply one live message; returns the delivery futures of the alerts it raised."""
        if partition not in self.owned:
            return []  # revoked while buffered: its new owner processes it
        part = self._partitions.get(partition)
        if part is None or part.position < offset:
            part = await self._catch_up(partition, offset)
        if offset < part.position:
            return []  # already applied during catch-up
        deliveries = await self._apply(partition, part, key, value)
        self.metrics.latency.observe(max(0.0, time.time() - ts))
        return deliveries

    async def _apply(self, partition: int, part: _Partition, key: bytes, value: bytes) -> list[Any]:
        part.position += 1
        parsed = parse_report(value) if key else Rejection("missing_field", "no actor key", value)
        if isinstance(parsed, Rejection):
            # Only the intake stage writes this topic, so this is a bug or a foreign writer.
            log.error(
                "unreadable message on %s: %s", self.settings.actor_reports_topic, parsed.reason
            )
            self.metrics.reject(parsed.reason)
            return []
        applied = part.graph.apply(key.decode(), parsed, time.time())
        self.metrics.reports.labels(outcome=str(applied.outcome)).inc()
        if applied.alert is None:
            return []
        return [await self._publish(partition, applied.alert)]

    async def _publish(self, partition: int, alert: Alert) -> Any:
        self.metrics.alerts.inc()
        return await self.send(
            self.settings.alerts_topic,
            alert.actor_id.encode(),
            orjson.dumps(alert.to_dict()),
            partition,
            None,
            None,
        )

    async def _catch_up(self, partition: int, offset: int) -> _Partition:
        """Rebuild (or extend) a partition's graph by replaying it up to `offset`."""
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            part = self._partitions.get(partition)
            if part is None:
                part = _Partition(RollingGraph(self.settings.window_seconds, self.rule), 0)
                await self._load_raised(partition, part.graph)
            if part.position < offset:
                started = time.monotonic()
                replayed = part.position
                deliveries: list[Any] = []
                async for records in read_partitions(
                    self.settings.bootstrap,
                    self.settings.actor_reports_topic,
                    [partition],
                    start={partition: part.position},
                    stop={partition: offset},
                ):
                    for record in records:
                        if record.offset < part.position:
                            continue
                        part.position = record.offset
                        deliveries += await self._apply(partition, part, record.key, record.value)
                part.position = max(part.position, offset)
                await asyncio.gather(*deliveries)
                log.info(
                    "partition %d: replayed %d messages in %.2fs, %d alerts re-raised",
                    partition,
                    offset - replayed,
                    time.monotonic() - started,
                    len(deliveries),
                )
            self._partitions[partition] = part
            self.refresh_gauges()
            return part

    async def _load_raised(self, partition: int, graph: RollingGraph) -> None:
        async for records in read_partitions(
            self.settings.bootstrap, self.settings.alerts_topic, [partition]
        ):
            for record in records:
                alert = orjson.loads(record.value)
                graph.mark_raised(alert["actor_id"], int(alert["level"]))

    def refresh_gauges(self) -> None:
        graphs = self.graphs()
        self.metrics.live_edges.set(sum(graph.live_edges for graph in graphs))
        self.metrics.actors.set(sum(graph.actor_count for graph in graphs))


def make_graph_agent(partitions: GraphPartitions) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the actor-reports topic."""

    async def graph_agent(stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deliveries: list[Any] = []
            for event in events:
                message = event.message
                deliveries += await partitions.process(
                    message.partition, message.offset, message.key, message.value, message.timestamp
                )
            await asyncio.gather(*deliveries)
            partitions.refresh_gauges()

    return graph_agent
