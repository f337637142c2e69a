"""Intake agent: validate each report; forward the valid ones to the identity topic, packed,
or reject them to the rejected topic with their reason and original bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.replay import Send, packs
from graph.contract import Rejection, parse_report
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["make_intake"]

EVENTS = 8  # fetched batches taken together (each is up to broker_max_poll_records)
WITHIN = 0.01


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""

    async def intake(stream: Any) -> None:
        async for events in stream.take_events(EVENTS, within=WITHIN):
            documents: list[dict[str, Any]] = []
            deliveries = []
            oldest = None
            for event in events:
                for record in event.message.value:
                    raw = record.value or b""
                    report = parse_report(raw)
                    if isinstance(report, Rejection):
                        metrics.reject(report.reason)
                        deliveries.append(await send(*_rejection(settings, record, report)))
                        continue
                    documents.append(report.to_document())
                    if record.timestamp is not None:
                        oldest = min(oldest or record.timestamp, record.timestamp)
            # Packed: the resolver's one partition sees them in this order.
            timestamp = oldest / 1000.0 if oldest is not None else None
            for pack in packs(documents):
                deliveries.append(
                    await send(settings.identity_topic, None, orjson.dumps(pack), 0, timestamp,
                               None)
                )  # fmt: skip
            # The batch is acked (and later committed) only once Kafka has everything it
            # produced: a crash before this line replays it.
            await asyncio.gather(*deliveries)

    return intake


def _rejection(settings: Settings, record: Any, rejection: Rejection) -> tuple[Any, ...]:
    headers = [
        ("linkwatch.reason", rejection.reason.encode()),
        ("linkwatch.detail", rejection.detail.encode("utf-8", "replace")),
        ("linkwatch.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    return settings.rejected_topic, record.key, rejection.raw, None, None, headers
