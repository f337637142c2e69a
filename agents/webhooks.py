"""Webhook agent: POST each new alert to the configured URLs, signed, retried, off the path.

It consumes the alerts topic in the worker group, so each alert is delivered by one
worker, and nothing in the report pipeline waits for it. A batch is acked once every
delivery has succeeded or given up, so a crash redelivers (receivers dedupe on the id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from streams.metrics import Metrics
from streams.settings import Settings

__all__ = ["deliver", "make_webhooks", "signature"]

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
TIMEOUT = 10.0
_RETRY_STATUSES = frozenset({408, 429})


def signature(secret: str, body: bytes) -> str:
    """The value of X-Linkwatch-Signature: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    alert_id: str,
    secret: str,
    attempts: int,
    metrics: Metrics,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """POST one alert to one URL until it is accepted, refused for good, or out of attempts."""
    headers = {
        "Content-Type": "application/json",
        "X-Linkwatch-Signature": signature(secret, body),
        "X-Linkwatch-Alert-Id": alert_id,
    }
    for attempt in range(1, attempts + 1):
        try:
            async with session.post(
                url, data=body, headers=headers | {"X-Linkwatch-Attempt": str(attempt)}
            ) as response:
                if 200 <= response.status < 300:
                    metrics.webhooks.labels(outcome="delivered").inc()
                    return True
                final = 400 <= response.status < 500 and response.status not in _RETRY_STATUSES
                problem = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            final, problem = False, type(error).__name__
        if final or attempt == attempts:
            break
        metrics.webhooks.labels(outcome="retried").inc()
        await sleep(FIRST_BACKOFF * 2 ** (attempt - 1))
    metrics.webhooks.labels(outcome="failed").inc()
    log.error("webhook delivery of an alert failed after %d attempts: %s", attempt, problem)
    return False


def make_webhooks(settings: Settings, metrics: Metrics) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the alerts topic, when webhook URLs are configured."""

    async def webhooks(stream: Any) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async for events in stream.take_events(8, within=0.05):
                await asyncio.gather(
                    *(
                        deliver(
                            session,
                            url,
                            record.value,
                            _alert_id(record.value),
                            settings.webhook_secret,
                            settings.webhook_attempts,
                            metrics,
                        )
                        for event in events
                        for record in event.message.value
                        for url in settings.webhooks
                    )
                )

    return webhooks


def _alert_id(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["alert_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""
