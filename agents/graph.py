"""Graph agent: apply actor-keyed records to the graph of their partition, raise alerts.

The records (report, merge, await, absorb) and what each does are in graph/records.py; this
agent feeds them to the PartitionGraph of their partition, publishes the alerts and sends the
absorbs a merge produces. Which alerts already exist is read back from the alerts topic
when a partition's graph is rebuilt (alerts for partition P always go to alerts partition P),
so replay and redelivery never raise an alert id twice, and an alert lost in a crash is
raised when its input is replayed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.children import packed
from agents.replay import TAKE, WITHIN, HeldAcks, Message, PartitionedState, Send
from graph.records import PartitionGraph
from graph.window import RollingGraph
from streams.kafka import actor_partition, read_partitions
from streams.memory import Trimmer
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["GraphStage", "make_graph_agent"]

log = logging.getLogger(__name__)

# Actors per graph in one slice of trailing expiry: about 1.5 ms of the event loop (6 ms
# for a worker's four partitions; measured with `RollingGraph.expire_some` in process).
EXPIRY_SLICE = 250


class GraphStage:
    """The partition graphs of the actor-reports partitions this worker owns."""

    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.rule = settings.rule()
        self.pseudonyms = settings.pseudonyms()
        self._trimmer = Trimmer()
        self.partitions: PartitionedState[PartitionGraph] = PartitionedState(
            settings.bootstrap,
            settings.actor_reports_topic,
            self._create,
            self._apply,
            metrics.handoffs.labels(topic=settings.actor_reports_topic).inc,
        )

    def graphs(self) -> list[RollingGraph]:
        return [partition.graph for partition in self.partitions.states()]

    def refresh_gauges(self, behind: bool | None = None) -> None:
        """The gauges, and free pages handed back as expiry frees edges (`memory.Trimmer`;
        `behind`: whether trailing expiry is still behind, when known)."""
        graphs = self.graphs()
        live_edges = sum(graph.live_edges for graph in graphs)
        self.metrics.live_edges.set(live_edges)
        self.metrics.actors.set(sum(graph.actor_count for graph in graphs))
        self._trimmer.held(live_edges, behind)

    def expire_some(self) -> bool:
        """A slice of the expiry that trails the watermark (`RollingGraph.expire_some`);
        True if more is due."""
        behind = any([graph.expire_some(EXPIRY_SLICE) for graph in self.graphs()])
        self.refresh_gauges(behind)
        return behind

    async def _create(self, partition: int) -> PartitionGraph:
        graph = RollingGraph(self.settings.window_seconds, self.rule, self.pseudonyms.reveal)
        async for records in read_partitions(
            self.settings.bootstrap, self.settings.alerts_topic, [partition]
        ):
            for record in records:
                graph.mark_raised(orjson.loads(record.value))
        return PartitionGraph(graph)

    async def _apply(
        self, partition: int, graph: PartitionGraph, message: Message, replaying: bool
    ) -> list[Any]:
        """Apply one packed message: `[[actor_id, record], ...]` for this partition."""
        try:
            entries = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError:
            entries = None
        if not isinstance(entries, list):
            return self._internal_error("an unreadable message")
        now = time.time()
        handled, unreadable = graph.handle_entries(entries, now)
        timestamp = getattr(message, "timestamp", None)
        if timestamp is not None and not replaying:
            self.metrics.latency.observe(max(0.0, now - timestamp / 1000.0))
        if unreadable:
            self._internal_error(f"unreadable records ({unreadable})", unreadable)
        alerts = handled.alerts
        onward: dict[int, list[list[Any]]] = {}
        if not replaying:
            # One counter update per outcome and message.
            for outcome, count in Counter(handled.outcomes).items():
                self.metrics.reports.labels(outcome=str(outcome)).inc(count)
            for target_key, absorb in handled.sends:
                self.metrics.merges.inc()
                target = actor_partition(target_key, self.settings.partitions)
                onward.setdefault(target, []).append([target_key, absorb])
        deliveries = []
        for target, entries in sorted(onward.items()):
            for pack in packed(entries):
                deliveries.append(
                    await self.send(self.settings.actor_reports_topic, None, pack, target, None,
                                    None)
                )  # fmt: skip
        for alert in alerts:
            self.metrics.alerts.labels(kind=alert.kind).inc()
            deliveries.append(
                await self.send(self.settings.alerts_topic, alert.actor_id.encode(),
                                orjson.dumps(alert.to_dict()), partition, None, None)
            )  # fmt: skip
        return deliveries

    def _internal_error(self, what: str, count: int = 1) -> list[Any]:
        log.error("skipped %s on %s", what, self.settings.actor_reports_topic)
        self.metrics.internal_errors.inc(count)
        return []


def make_graph_agent(stage: GraphStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the actor-reports topic."""

    async def graph_agent(stream: Any) -> None:
        acks = HeldAcks(stream)
        async for events in stream.take_events(TAKE, within=WITHIN):
            deliveries: list[Any] = []
            for event in events:
                for record in event.message.value:
                    deliveries += await stage.partitions.process(record.partition, record)
            stage.refresh_gauges()
            # The batch is acked only once Kafka has everything it produced.
            await acks.hold(events, deliveries)

    return graph_agent
