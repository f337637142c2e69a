"""Graph agent: apply actor-keyed records to the graph of their partition, raise alerts.

The records (report, merge, await, absorb) and what each does are in graph/records.py; this
agent feeds them to the PartitionGraph of their partition, publishes the alerts and sends the
absorbs a merge produces. Which alerts already exist is read back from the alerts topic
when a partition's graph is rebuilt (alerts for partition P always go to alerts partition P),
so replay and redelivery never raise an alert id twice, and an alert lost in a crash is
raised when its input is replayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.replay import Message, PartitionedState, Send
from graph.records import InvalidRecord, PartitionGraph
from graph.window import RollingGraph
from streams.kafka import read_partitions
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["GraphStage", "make_graph_agent"]

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05


class GraphStage:
    """The partition graphs of the actor-reports partitions this worker owns."""

    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.rule = settings.rule()
        self.partitions: PartitionedState[PartitionGraph] = PartitionedState(
            settings.bootstrap, settings.actor_reports_topic, self._create, self._apply
        )

    def graphs(self) -> list[RollingGraph]:
        return [partition.graph for partition in self.partitions.states()]

    def refresh_gauges(self) -> None:
        graphs = self.graphs()
        self.metrics.live_edges.set(sum(graph.live_edges for graph in graphs))
        self.metrics.actors.set(sum(graph.actor_count for graph in graphs))

    async def _create(self, partition: int) -> PartitionGraph:
        graph = RollingGraph(self.settings.window_seconds, self.rule)
        async for records in read_partitions(
            self.settings.bootstrap, self.settings.alerts_topic, [partition]
        ):
            for record in records:
                graph.mark_raised(orjson.loads(record.value))
        return PartitionGraph(graph)

    async def _apply(
        self, partition: int, graph: PartitionGraph, message: Message, replaying: bool
    ) -> list[Any]:
        try:
            record = orjson.loads(message.value or b"")
            handled = graph.handle((message.key or b"").decode(), record, time.time())
        except (orjson.JSONDecodeError, InvalidRecord, KeyError, TypeError, AttributeError) as exc:
            # Only linkwatch writes this topic: this is a bug or a foreign writer, never input.
            log.error(
                "skipped an unreadable record on %s: %s",
                self.settings.actor_reports_topic,
                type(exc).__name__,
            )
            self.metrics.internal_errors.inc()
            return []
        deliveries = []
        if not replaying:
            for outcome in handled.outcomes:
                self.metrics.reports.labels(outcome=str(outcome)).inc()
            for key, onward in handled.sends:
                self.metrics.merges.inc()
                deliveries.append(
                    await self.send(
                        self.settings.actor_reports_topic,
                        key.encode(),
                        orjson.dumps(onward),
                        None,
                        None,
                        None,
                    )
                )
        for alert in handled.alerts:
            self.metrics.alerts.labels(kind=alert.kind).inc()
            deliveries.append(
                await self.send(
                    self.settings.alerts_topic,
                    alert.actor_id.encode(),
                    orjson.dumps(alert.to_dict()),
                    partition,
                    None,
                    None,
                )
            )
        return deliveries


def make_graph_agent(stage: GraphStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the actor-reports topic."""

    async def graph_agent(stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deliveries: list[Any] = []
            for event in events:
                message = event.message
                deliveries += await stage.partitions.process(message.partition, message)
                stage.metrics.latency.observe(max(0.0, time.time() - message.timestamp))
            # The batch is acked only once Kafka has everything it produced.
            await asyncio.gather(*deliveries)
            stage.refresh_gauges()

    return graph_agent
