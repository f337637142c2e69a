"""Intake agent: validate each report; forward the valid ones to the identity topic, packed,
or reject them to the rejected topic with their reason and original bytes.

Validation and pseudonymisation are stateless and most of a report's cost, so the agent
hands each batch to the worker's intake processes (streams/offload.py) and the event loop
meanwhile runs the resolve and graph agents: that is where a worker's second core goes.
`validate_batch` (agents/children.py) is the one code path, in a child process or in the
worker itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agents.children import Validated, validate_batch
from agents.replay import TAKE, WITHIN, Send
from graph.identity import Pseudonyms
from streams.metrics import Metrics
from streams.offload import Offload
from streams.settings import Settings

__all__ = ["Validated", "make_intake", "validate_batch", "validated"]


def make_intake(
    settings: Settings, metrics: Metrics, send: Send
) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the reports topic."""

    async def intake(stream: Any) -> None:
        offload = Offload(settings.intake_processes, validate_batch, settings.pseudonyms, metrics)
        renewing = asyncio.ensure_future(offload.renew_when_idle())
        try:
            async for events in stream.take_events(TAKE, within=WITHIN):
                # Each event is a fetched batch of one partition (streams/transport.py).
                records = [record for event in events for record in event.message.value]
                identity, rejected = await validated(offload, records)
                deliveries = []
                for index, reason, detail in rejected:
                    metrics.reject(reason)
                    record = records[index]
                    deliveries.append(await send(*_rejection(settings, record, reason, detail)))
                timestamp = events[0].message.timestamp if events else None
                for message in identity:
                    deliveries.append(
                        await send(settings.identity_topic, None, message, 0, timestamp, None)
                    )
                await asyncio.gather(*deliveries)
        finally:
            renewing.cancel()
            offload.close()

    return intake


async def validated(offload: Offload[Pseudonyms, Validated], records: list[Any]) -> Validated:
    """`validate_batch` over fetched records, split across the offload's processes."""
    pieces = _pieces(records, offload.width)
    return _joined(pieces, await offload.map(pieces))


# A piece of a batch as the work takes it: the values, their input partitions and offsets.
Piece = tuple[list[bytes | None], list[int], list[int]]


def _piece(records: list[Any]) -> Piece:
    return (
        [record.value for record in records],
        [record.partition for record in records],
        [record.offset for record in records],
    )


def _pieces(records: list[Any], count: int) -> list[Piece]:
    """The batch in `count` consecutive pieces, for as many processes."""
    size = -(-len(records) // count) or 1
    return [_piece(records[start : start + size]) for start in range(0, len(records), size)]


def _joined(pieces: list[Piece], results: list[Validated]) -> Validated:
    """The pieces' results as one batch's: messages in order, rejection indexes rebased."""
    identity: list[bytes] = []
    rejected: list[tuple[int, str, str]] = []
    base = 0
    for (values, _, _), (messages, rejections) in zip(pieces, results, strict=True):
        identity += messages
        rejected += [(base + index, reason, detail) for index, reason, detail in rejections]
        base += len(values)
    return identity, rejected


def _rejection(settings: Settings, record: Any, reason: str, detail: str) -> tuple[Any, ...]:
    headers = [
        ("linkwatch.reason", reason.encode()),
        ("linkwatch.detail", detail.encode("utf-8", "replace")),
        ("linkwatch.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    return settings.rejected_topic, record.key, record.value or b"", None, None, headers
