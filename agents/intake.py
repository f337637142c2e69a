"""Intake agent: validate each report; forward the valid ones to the identity topic, packed,
or reject them to the rejected topic with their reason and original bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agents.replay import TAKE, WITHIN, Send, packs
from graph.contract import Rejection, parse_report
from graph.privacy import pseudonymise
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["make_intake"]


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""

    pseudonyms = settings.pseudonyms()

    async def intake(stream: Any) -> None:
        async for events in stream.take_events(TAKE, within=WITHIN):
            rows: list[list[Any]] = []
            deliveries = []
            for event in events:
                for record in event.message.value:  # a fetched batch (streams/transport.py)
                    report = parse_report(record.value or b"")
                    if isinstance(report, Rejection):
                        metrics.reject(report.reason)
                        deliveries.append(await send(*_rejection(settings, record, report)))
                        continue
                    row = pseudonymise(report, pseudonyms).to_row()
                    row.append(record.partition)  # its input partition: for the watermark
                    rows.append(row)
            # Packed: the resolver's one partition sees them in this order.
            timestamp = events[0].message.timestamp if events else None
            for pack in packs(rows):
                deliveries.append(
                    await send(settings.identity_topic, None, orjson.dumps(pack), 0, timestamp,
                               None)
                )  # fmt: skip
            await asyncio.gather(*deliveries)

    return intake


def _rejection(settings: Settings, record: Any, rejection: Rejection) -> tuple[Any, ...]:
    headers = [
        ("linkwatch.reason", rejection.reason.encode()),
        ("linkwatch.detail", rejection.detail.encode("utf-8", "replace")),
        ("linkwatch.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    return settings.rejected_topic, record.key, rejection.raw, None, None, headers
