"""Intake agent: validate each report; forward it to the identity topic, or reject it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agents.replay import Send
from graph.contract import Rejection, parse_report
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["make_intake"]

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""

    async def intake(stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deliveries = []
            for event in events:
                message = event.message
                raw = message.value if isinstance(message.value, bytes) else b""
                report = parse_report(raw)
                if isinstance(report, Rejection):
                    metrics.reject(report.reason)
                    headers = [
                        ("linkwatch.reason", report.reason.encode()),
                        ("linkwatch.detail", report.detail.encode("utf-8", "replace")),
                        (
                            "linkwatch.source",
                            f"{message.topic}/{message.partition}/{message.offset}".encode(),
                        ),
                    ]
                    deliveries.append(
                        await send(settings.rejected_topic, message.key, raw, None, None, headers)
                    )
                    continue
                deliveries.append(
                    await send(
                        settings.identity_topic, None, report.to_json(), 0, message.timestamp, None
                    )
                )
            # The batch's events are acked (and later committed) only once every message
            # they produced is in Kafka: a crash before this line replays them.
            await asyncio.gather(*deliveries)

    return intake
