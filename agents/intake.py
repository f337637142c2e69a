"""Intake agent: validate each report; forward the valid ones to the identity topic, packed,
or reject them to the rejected topic with their reason and original bytes.

Validation and pseudonymisation are stateless and most of a report's cost, so the agent
hands each batch to the worker's intake processes (streams/offload.py) and the event loop
meanwhile runs the resolve and graph agents: that is where a worker's second core goes.
The worker hands over the fetched bytes, not the reports (streams/fetched.py), and
`validate_fetched` (agents/children.py) is the one code path that reads and validates
them, in a child process or in the worker itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agents.children import Intake, Refused, validate_batch, validate_fetched
from agents.replay import TAKE, WITHIN, HeldAcks, Send
from graph.identity import Pseudonyms
from streams.fetched import Fetched, RawFetch
from streams.metrics import Metrics
from streams.offload import Offload
from streams.settings import Settings

__all__ = ["Intake", "make_intake", "validate_batch", "validate_fetched", "validated"]


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""

    async def intake(stream: Any) -> None:
        offload = Offload(settings.intake_processes, validate_fetched, settings.pseudonyms, metrics)
        renewing = asyncio.ensure_future(offload.renew_when_idle())
        try:
            acks = HeldAcks(stream)
            async for events in stream.take_events(TAKE, within=WITHIN):
                # Each event is one partition's fetch (streams/transport.py), a `RawFetch`
                # whose records the intake process reads (streams/fetched.py).
                fetches = [fetch for event in events for fetch in event.message.value]
                identity, rejected = await validated(offload, fetches)
                deliveries = []
                for rejection in rejected:
                    metrics.reject(rejection[4])  # its reason
                    deliveries.append(await send(*_rejection(settings, rejection)))
                timestamp = events[0].message.timestamp if events else None
                for message in identity:
                    deliveries.append(
                        await send(settings.identity_topic, None, message, 0, timestamp, None)
                    )
                await acks.hold(events, deliveries)
        finally:
            renewing.cancel()
            offload.close()

    return intake


async def validated(offload: Offload[Pseudonyms, Intake], fetches: list[RawFetch]) -> Intake:
    """`validate_fetched` over fetches of the reports topic, split across the offload's
    processes."""
    pieces = _pieces([fetch.fetched() for fetch in fetches], offload.width)
    return _joined(await offload.map(pieces))


# A piece of a batch as the work takes it: some of its fetches, in order.
Piece = tuple[list[Fetched]]


def _pieces(fetches: list[Fetched], count: int) -> list[Piece]:
    """The batch's fetches in at most `count` consecutive pieces of about as many bytes,
    one for each process."""
    if not fetches:
        return []
    share = sum(len(data) for _, _, data in fetches) / count
    pieces: list[Piece] = [([],)]
    size = 0
    for fetch in fetches:
        if size >= share and len(pieces) < count:
            pieces.append(([],))
            size = 0
        pieces[-1][0].append(fetch)
        size += len(fetch[2])
    return pieces


def _joined(results: list[Intake]) -> Intake:
    """The pieces' results as one batch's, in order."""
    identity: list[bytes] = []
    rejected: list[Refused] = []
    for messages, rejections in results:
        identity += messages
        rejected += rejections
    return identity, rejected


def _rejection(settings: Settings, rejection: Refused) -> tuple[Any, ...]:
    partition, offset, key, value, reason, detail = rejection
    headers = [
        ("linkwatch.reason", reason.encode()),
        ("linkwatch.detail", detail.encode("utf-8", "replace")),
        ("linkwatch.source", f"{settings.reports_topic}/{partition}/{offset}".encode()),
    ]
    return settings.rejected_topic, key, value or b"", None, None, headers
