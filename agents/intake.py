"""Intake agent: validate each report, resolve its actor, forward it keyed by actor or reject it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from graph.contract import Rejection
from graph.pipeline import route
from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["BATCH_SIZE", "BATCH_WITHIN", "make_intake"]

BATCH_SIZE = 1000
BATCH_WITHIN = 0.05

# Faust's producer.send(topic, key, value, partition, timestamp, headers) -> delivery future.
Send = Callable[..., Awaitable[Awaitable[Any]]]


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""
    secret = settings.secret_bytes

    async def intake(stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deliveries = []
            for event in events:
                message = event.message
                raw = message.value if isinstance(message.value, bytes) else b""
                routed = route(raw, secret)
                if isinstance(routed, Rejection):
                    metrics.reject(routed.reason)
                    headers = [
                        ("linkwatch.reason", routed.reason.encode()),
                        ("linkwatch.detail", routed.detail.encode("utf-8", "replace")),
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
                        settings.actor_reports_topic,
                        routed.actor_id.encode(),
                        routed.report.to_json(),
                        None,
                        message.timestamp,
                        None,
                    )
                )
            # The batch's events are acked (and later committed) only once every message
            # they produced is in Kafka: a crash before this line replays them.
            await asyncio.gather(*deliveries)

    return intake
