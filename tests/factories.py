"""Test factories: reports as the contract's JSON, with overrides for the field under test."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.fetched import RawFetch

_ids = itertools.count(1)
BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_report(
    offender: str = "offender-1",
    victim: str = "victim-1",
    region: str = "norfolk",
    *,
    platform: str = "chirp",
    at: datetime | timedelta = timedelta(0),
    report_id: str | None = None,
    category: str = "harassment",
    signals: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One valid report; `at` is a datetime or an offset from BASE_TIME."""
    moment = BASE_TIME + at if isinstance(at, timedelta) else at
    report: dict[str, Any] = {
        "report_id": report_id or f"r-{next(_ids)}",
        "platform": platform,
        "reported_at": moment.isoformat(),
        "category": category,
        "offender": {"account": offender},
        "victim": {"account": victim, "region": region},
    }
    if signals is not None:
        report["offender"]["signals"] = signals
    report.update(extra)
    return report


def encode(report: dict[str, Any]) -> bytes:
    return orjson.dumps(report)


@dataclass
class Message:
    """A record as a stage's `process` reads it (its value, offset and timestamp in ms)."""

    value: bytes
    offset: int
    timestamp: int | None = None


def serial_case(
    offender: str = "offender-1", regions: int = 3, days_apart: int = 10
) -> list[bytes]:
    """One offender, one victim in each of `regions` regions, in event-time order."""
    names = ["norfolk", "suffolk", "kent", "devon", "cumbria", "dorset", "essex", "surrey"]
    return [
        encode(make_report(offender, f"victim-{i}", names[i], at=timedelta(days=i * days_apart)))
        for i in range(regions)
    ]


def fetch(
    partition: int,
    offset: int,
    values: list[bytes | None],
    *,
    keys: list[bytes | None] | None = None,
    first: int | None = None,
    topic: str = "linkwatch.reports",
) -> RawFetch:
    """One partition's fetch as the worker's consumer hands it on (streams/fetched.py): the
    bytes of one Kafka record batch holding `values` at offsets from `offset`, taken from
    `first` (default: `offset`)."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 30,
    )  # fmt: skip
    for delta, value in enumerate(values):
        key = keys[delta] if keys is not None else None
        builder.append(delta, timestamp=1_700_000_000_000, key=key, value=value, headers=[])
    data = bytes(builder.build())
    data = struct.pack(">q", offset) + data[8:]  # the base offset: outside the batch's CRC
    last = offset + len(values) - 1
    return RawFetch(topic, partition, last, 1_700_000_000_000, 0,
                    offset if first is None else first, data)  # fmt: skip
