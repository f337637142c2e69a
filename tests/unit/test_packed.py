"""Packing for the internal topics: every message fits Kafka's 1 MB, whatever the reports
hold, and the records come out as they went in."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agents.children import PACK, PACK_BYTES, packed, validate_batch
from streams.settings import Settings
from tests.factories import encode, make_report

SETTINGS = Settings(pseudonym_key="packed-test-key-0123456789")


@given(st.lists(st.integers(0, 300_000), max_size=1_300))
def test_messages_hold_every_record_in_order_within_both_limits(sizes: list[int]) -> None:
    items = [["r", "x" * size] for size in sizes]
    messages = packed(items)
    decoded = [orjson.loads(message) for message in messages]
    assert [item for pack in decoded for item in pack] == items
    for message, pack in zip(messages, decoded, strict=True):
        assert 0 < len(pack) <= PACK
        assert len(message) <= PACK_BYTES or len(pack) == 1


def test_typical_packs_are_not_split() -> None:
    items = [["report", "x" * 150, 1.5, None]] * (2 * PACK + 7)
    assert [len(orjson.loads(message)) for message in packed(items)] == [PACK, PACK, 7]


def test_reports_at_the_size_limit_go_to_the_identity_topic_in_messages_kafka_takes() -> None:
    # Offender signals the linker does not use are kept, pseudonymised: a 64 KiB report of
    # them becomes a row of about 180 KB.
    reports = [
        make_report(f"limit.{number}", f"victim-{number}", "kent", report_id=f"limit-{number}",
                    signals={f"x{index}": "v" for index in range(5_400)})
        for number in range(24)
    ]  # fmt: skip
    values = [encode(report) for report in reports]
    assert all(60 * 1024 < len(value) <= 64 * 1024 for value in values)
    messages, rejected = validate_batch(values, [0] * 24, list(range(24)), SETTINGS.pseudonyms())
    assert rejected == []
    assert max(len(message) for message in messages) <= PACK_BYTES
    rows = [row for message in messages for row in orjson.loads(message)]
    assert [row[0] for row in rows] == [f"limit-{number}" for number in range(24)]
