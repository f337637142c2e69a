"""The transport's consumer: telling a replaced log from the one a worker read (item 4 of
streams/transport.py), and which acks move the commit."""

from __future__ import annotations

import pytest
from aiokafka.structs import OffsetAndTimestamp
from faust.types import TP, ConsumerMessage

from streams.transport import LinkwatchApp, first_record, log_replaced

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


def _message(offset: int, generation: int) -> ConsumerMessage:
    return ConsumerMessage(
        "reports", 0, offset, 0.0, 0, [], None, b"", None, 0, 0, TP("reports", 0),
        generation_id=generation,
    )  # fmt: skip


def test_an_ack_from_before_the_last_rebalance_does_not_move_the_commit() -> None:
    """Faust's stream acks a message of an older generation when it skips it unprocessed;
    the commit (one past the highest acked offset) must not count it."""
    app = LinkwatchApp("ack-test", broker="kafka://127.0.0.1:9")  # never started
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    app.consumer_generation_id = 3
    consumer = app.consumer
    tp = TP("reports", 0)
    assert consumer.ack(_message(10, generation=3))
    stale = _message(500, generation=2)
    assert not consumer.ack(stale) and stale.acked
    assert consumer._new_offset(tp) == 11  # not 501: offsets 11-500 are fetched again
    assert consumer.ack(_message(11, generation=3))
    assert consumer._new_offset(tp) == 12
