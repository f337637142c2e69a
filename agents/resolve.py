"""Resolve agent: link offender accounts into actors, and route each report to its actor.

It consumes the one-partition identity topic, so a single resolver sees every report in one
order: every worker then agrees which actor an account belongs to. It sends each report to
`actor-reports` keyed by its actor, and for each merge a `merge` record to the partition of
the actor that was absorbed (the graph agent there moves that actor's state on).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.replay import Message, PartitionedState, Send
from graph.aliases import AliasResolver
from graph.contract import Rejection, report_from_document
from graph.records import resolution_records
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["ResolveStage", "make_resolve_agent"]

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05


class ResolveStage:
    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.partitions: PartitionedState[AliasResolver] = PartitionedState(
            settings.bootstrap, settings.identity_topic, self._create, self._apply
        )

    async def _create(self, partition: int) -> AliasResolver:
        return AliasResolver(
            self.settings.secret_bytes,
            self.settings.max_accounts_per_signal,
            self.settings.link_by_text,
        )

    async def _apply(
        self, partition: int, resolver: AliasResolver, message: Message, replaying: bool
    ) -> list[Any]:
        try:
            document = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError:
            document = None
        report = report_from_document(document) if isinstance(document, dict) else None
        if report is None or isinstance(report, Rejection):
            log.error("skipped an invalid report on %s", self.settings.identity_topic)
            self.metrics.internal_errors.inc()
            return []
        resolution = resolver.resolve(report)
        self.metrics.accounts.set(resolver.accounts)
        if replaying:
            return []
        settings, send = self.settings, self.send
        deliveries = []
        for hub in resolution.hubs:
            self.metrics.hubs.labels(signal=hub.signal).inc()
            log.warning("signal hub: a %s value reached %d accounts", hub.signal, hub.accounts)
            value = {"signal": hub.signal, "fingerprint": hub.fingerprint, "accounts": hub.accounts}
            deliveries.append(
                await send(settings.hubs_topic, None, orjson.dumps(value), None, None, None)
            )
        timestamp = getattr(message, "timestamp", None)
        for key, record in resolution_records(resolution, document):
            deliveries.append(
                await send(
                    settings.actor_reports_topic,
                    key.encode(),
                    orjson.dumps(record),
                    None,
                    timestamp,
                    None,
                )
            )
        return deliveries


def make_resolve_agent(stage: ResolveStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the identity topic."""

    async def resolve_agent(stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deliveries: list[Any] = []
            for event in events:
                deliveries += await stage.partitions.process(event.message.partition, event.message)
            await asyncio.gather(*deliveries)

    return resolve_agent
