"""Graph agent: apply actor-keyed records to the rolling graph of their partition, raise alerts.

Three kinds of record arrive on `actor-reports`, each keyed by the actor it concerns:
- `report`: a report resolved to its actor, with the alias links it created;
- `merge`: the actor was merged into an older one; its state leaves this partition as
- `absorb`: a merged actor's state, folded into the surviving actor (the rule re-checked at
  once). An absorb for an actor that itself merged away meanwhile is forwarded on.

Which alerts exist is read back from the alerts topic when a partition's graph is rebuilt
(alerts for partition P always go to alerts partition P), so replay and redelivery never
raise an alert id twice, and an alert lost in a crash is raised when its input replays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.replay import Message, PartitionedState, Send
from graph.aliases import Link
from graph.contract import Rejection, report_from_document
from graph.rules import Alert
from graph.window import RollingGraph
from streams.kafka import read_partitions
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["GraphStage", "make_graph_agent"]

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05


class GraphStage:
    """The rolling graphs of the actor-reports partitions this worker owns."""

    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.rule = settings.rule()
        self.partitions: PartitionedState[RollingGraph] = PartitionedState(
            settings.bootstrap, settings.actor_reports_topic, self._create, self._apply
        )

    def graphs(self) -> list[RollingGraph]:
        return self.partitions.states()

    def refresh_gauges(self) -> None:
        graphs = self.graphs()
        self.metrics.live_edges.set(sum(graph.live_edges for graph in graphs))
        self.metrics.actors.set(sum(graph.actor_count for graph in graphs))

    async def _create(self, partition: int) -> RollingGraph:
        graph = RollingGraph(self.settings.window_seconds, self.rule)
        async for records in read_partitions(
            self.settings.bootstrap, self.settings.alerts_topic, [partition]
        ):
            for record in records:
                graph.mark_raised(orjson.loads(record.value))
        return graph

    async def _apply(
        self, partition: int, graph: RollingGraph, message: Message, replaying: bool
    ) -> list[Any]:
        try:
            record = orjson.loads(message.value or b"")
            kind = record["kind"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return self._internal_error("an unreadable record")
        now = time.time()
        alerts: tuple[Alert, ...] = ()
        deliveries: list[Any] = []
        if kind == "report":
            report = report_from_document(record["report"])
            if isinstance(report, Rejection) or not message.key:
                return self._internal_error("an invalid report")
            links = [Link.from_dict(link) for link in record.get("links", ())]
            applied = graph.apply(message.key.decode(), report, now, links)
            alerts = applied.alerts
            if not replaying:
                self.metrics.reports.labels(outcome=str(applied.outcome)).inc()
        elif kind == "merge":
            state = graph.detach(record["from"], record["into"])
            if state is not None and not replaying:
                deliveries.append(await self._send_absorb(record["into"], state))
        elif kind == "absorb":
            into = record["into"]
            onward = graph.forwarded_to(into)
            if onward is not None:
                if not replaying:
                    deliveries.append(await self._send_absorb(onward, record["state"]))
            else:
                alerts = graph.absorb(into, record["state"], now)
        else:
            return self._internal_error(f"a record of unknown kind {kind!r}")
        for alert in alerts:
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

    async def _send_absorb(self, into: str, state: dict[str, Any]) -> Any:
        self.metrics.merges.inc()
        record = {"kind": "absorb", "into": into, "state": state}
        return await self.send(
            self.settings.actor_reports_topic, into.encode(), orjson.dumps(record), None, None, None
        )

    def _internal_error(self, what: str) -> list[Any]:
        # Only linkwatch writes this topic: this is a bug or a foreign writer, never input.
        log.error("skipped %s on %s", what, self.settings.actor_reports_topic)
        self.metrics.internal_errors.inc()
        return []


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
