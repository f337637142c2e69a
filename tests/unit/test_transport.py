"""The transport's consumer: telling a replaced log from the one a worker read (item 4 of
streams/transport.py), which acks move the commit, and how often handed-off partitions are
fetched (item 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import OffsetAndTimestamp
from faust.types import TP, ConsumerMessage

from streams import transport
from streams.transport import FewerFetches, LinkwatchApp, first_record, log_replaced

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


class _Planner:
    """aiokafka's fetch planning, reduced: one request to node 0 with every partition of the
    assignment it is given, unless a fetch to that node is in flight."""

    def __init__(self) -> None:
        self.in_flight = False
        self.given: list[list[TP]] = []

    def __call__(self, assignment: Any) -> tuple[Any, ...]:
        tps = list(assignment.tps)
        self.given.append(tps)
        if self.in_flight or not tps:
            return [], {}, 0.2, False, []
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append((tp.partition, 0, 1 << 20))
        request = FetchRequest(25, 1, 1 << 20, 0, list(topics.items()))
        return [(0, request)], {}, 0.2, False, []


@dataclass
class _Assignment:
    tps: list[TP]
    active: bool = True


REPORTS, IDENTITY = TP("reports", 0), TP("identity", 0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The transport's clock, moved by hand."""
    now = [100.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: now[0])
    return now


def _identity_handed_off(planner: _Planner) -> FewerFetches:
    return FewerFetches(planner, lambda topic, partition: topic == "identity", every=0.25)


def test_handed_off_partitions_join_a_fetch_once_each_interval(clock: list[float]) -> None:
    planner = _Planner()
    plan = _identity_handed_off(planner)
    assignment = _Assignment([REPORTS, IDENTITY])

    plan(assignment)  # due: both
    clock[0] += 0.1
    plan(assignment)  # not yet: the reports partition alone
    clock[0] += 0.2
    plan(assignment)  # 0.3 s on: both again
    assert planner.given == [[REPORTS, IDENTITY], [REPORTS], [REPORTS, IDENTITY]]
    # What the planning returns is aiokafka's, with the partition left out of the request.
    clock[0] += 0.1
    requests = plan(assignment)[0]
    assert [request.topics for _, request in requests] == [[("reports", [(0, 0, 1 << 20)])]]


def test_a_turn_missed_while_a_fetch_is_in_flight_is_taken_by_the_next_fetch(
    clock: list[float],
) -> None:
    planner = _Planner()
    plan = _identity_handed_off(planner)
    assignment = _Assignment([REPORTS, IDENTITY])
    planner.in_flight = True
    plan(assignment)  # due, but no request can go: still due
    planner.in_flight = False
    clock[0] += 0.01
    plan(assignment)
    assert planner.given[-1] == [REPORTS, IDENTITY]


def test_partitions_not_handed_off_are_in_every_fetch() -> None:
    planner = _Planner()
    shared = {IDENTITY}  # e.g. another worker's messages came: `handing_off` is false
    plan = FewerFetches(planner, lambda topic, partition: False, every=0.25)
    for _ in range(3):
        plan(_Assignment([REPORTS, *shared]))
    assert planner.given == [[REPORTS, IDENTITY]] * 3
