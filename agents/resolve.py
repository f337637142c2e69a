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
from dataclasses import dataclass
from typing import Any

import orjson

from agents.replay import TAKE, WITHIN, Message, PartitionedState, Send, packs
from graph.aliases import AliasResolver
from graph.contract import Report
from graph.records import erasure_records, resolution_records
from graph.watermark import LowWatermark
from streams.kafka import actor_partition
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["ResolveStage", "make_resolve_agent"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Resolving:
    """The resolver's state: which account is whose, and how far the stream has got."""

    resolver: AliasResolver
    watermark: LowWatermark


class ResolveStage:
    def __init__(self, settings: Settings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.partitions: PartitionedState[_Resolving] = PartitionedState(
            settings.bootstrap, settings.identity_topic, self._create, self._apply
        )

    def expire_some(self) -> bool:
        """A step of the resolver's retention (`AliasResolver.forget_some`); True if more
        is due."""
        behind = False
        for state in self.partitions.states():  # one: the identity topic's partition
            behind |= state.resolver.forget_some()
            self.metrics.accounts.set(state.resolver.accounts)
        return behind

    async def _create(self, partition: int) -> _Resolving:
        settings = self.settings
        resolver = AliasResolver(
            settings.secret_bytes,
            settings.max_accounts_per_signal,
            settings.link_by_text,
            settings.window_seconds,
        )
        return _Resolving(resolver, LowWatermark(settings.partitions))

    async def _apply(
        self, partition: int, state: _Resolving, message: Message, replaying: bool
    ) -> list[Any]:
        resolver = state.resolver
        try:
            rows = orjson.loads(message.value or b"")
            # A row is a report; an object is an erasure (`linkwatch erase`).
            reports = [(row, row if type(row) is dict else Report.from_row(row)) for row in rows]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            log.error("skipped an unreadable batch on %s", self.settings.identity_topic)
            self.metrics.internal_errors.inc()
            return []
        settings, send = self.settings, self.send
        by_partition: dict[int, list[list[Any]]] = {}
        deliveries = []
        for row, report in reports:
            if not isinstance(report, Report):
                for target, key, record in self._erase(resolver, row, replaying):
                    by_partition.setdefault(target, []).append([key, record])
                continue
            # Its input partition and its offset there (rows from older workers lack these).
            source = row[10] if len(row) > 10 else 0
            offset = row[11] if len(row) > 11 else -1
            stamp = state.watermark.observe(source, report.event_time, offset)
            resolution = resolver.resolve(report, stamp)
            if replaying:
                continue
            for hub in resolution.hubs:
                self.metrics.hubs.labels(signal=hub.signal).inc()
                log.warning("signal hub: a %s value reached %d accounts", hub.signal, hub.accounts)
                value = {"signal": hub.signal, "fingerprint": hub.fingerprint,
                         "accounts": hub.accounts}  # fmt: skip
                deliveries.append(
                    await send(settings.hubs_topic, None, orjson.dumps(value), None, None, None)
                )
            for key, record in resolution_records(resolution, row[:10]):
                target = actor_partition(key, settings.partitions)
                by_partition.setdefault(target, []).append([key, record])
        self.metrics.accounts.set(resolver.accounts)
        # One message per partition: the records of this batch for that partition, in order.
        timestamp = getattr(message, "timestamp", None)
        for target, entries in sorted(by_partition.items()):
            for pack in packs(entries):
                deliveries.append(
                    await send(settings.actor_reports_topic, None, orjson.dumps(pack), target,
                               timestamp / 1000.0 if timestamp else None, None)
                )  # fmt: skip
        return deliveries

    def _erase(
        self, resolver: AliasResolver, entry: dict[str, Any], replaying: bool
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """An erasure: the resolver forgets the account; records tell the graphs."""
        try:
            erasure = entry["erase"]
            offender, victim = str(erasure["offender"]), str(erasure["victim"])
        except (KeyError, TypeError):
            log.error("skipped an unreadable erasure on %s", self.settings.identity_topic)
            self.metrics.internal_errors.inc()
            return []
        actor_id = resolver.erase(offender)
        if replaying:
            return []
        log.info("erasure applied (actor %s)", actor_id or "none: not an offender here")
        return erasure_records(actor_id, offender, victim, self.settings.partitions)


def make_resolve_agent(stage: ResolveStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the identity topic."""

    async def resolve_agent(stream: Any) -> None:
        async for events in stream.take_events(TAKE, within=WITHIN):
            deliveries: list[Any] = []
            for event in events:
                for record in event.message.value:
                    deliveries += await stage.partitions.process(record.partition, record)
            await asyncio.gather(*deliveries)

    return resolve_agent
