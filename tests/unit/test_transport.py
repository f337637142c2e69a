"""Telling a replaced log from the one a worker read (streams/transport.py, item 4)."""

from __future__ import annotations

import pytest
from aiokafka.structs import OffsetAndTimestamp

from streams.transport import first_record, log_replaced

STARTED = (0, 1_700_000_000_000)


def test_the_first_record_of_an_empty_partition_is_none_from_kafka_and_from_tansu() -> None:
    assert first_record(None) is None  # Apache Kafka
    assert first_record(OffsetAndTimestamp(0, -1)) is None  # Tansu's memory engine
    assert first_record(OffsetAndTimestamp(7, 123)) == (7, 123)


@pytest.mark.parametrize(
    ("now", "replaced"),
    [
        (STARTED, False),  # the same log
        ((40, 1_700_000_100_000), False),  # retention moved the start on
        (None, True),  # empty: the broker came back with nothing
        ((0, 1_700_000_500_000), True),  # another record at offset 0: written since
    ],
)
def test_a_log_is_replaced_when_it_no_longer_starts_with_its_first_record(
    now: tuple[int, int] | None, replaced: bool
) -> None:
    assert log_replaced(STARTED, now) is replaced


def test_a_log_that_started_lower_than_before_is_new() -> None:
    assert log_replaced((40, 5), (0, 9)) is True


def test_a_partition_that_was_empty_cannot_be_judged() -> None:
    assert log_replaced(None, STARTED) is False
    assert log_replaced(None, None) is False
