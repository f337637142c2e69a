"""The record protocol: however partitions interleave, merges apply in sequential order."""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path

import pytest

from graph.aliases import AliasResolver
from graph.contract import Report, parse_report
from graph.identity import Pseudonyms, pseudonym_key_for
from graph.pipeline import Pipeline
from graph.privacy import pseudonymise
from graph.records import PartitionGraph, partition_of, read_rows, resolution_records, route_rows
from graph.rules import CrossRegionRule
from graph.watermark import LowWatermark
from graph.window import RollingGraph
from streams.simulate import simulate

SECRET = b"records-test"
WINDOW = 365 * 86400.0


def _one_report() -> Report:
    report = parse_report(
        b'{"report_id":"r1","platform":"chirp","reported_at":"2025-01-01T00:00:00Z",'
        b'"category":"other","offender":{"account":"a"},"victim":{"account":"v","region":"kent"}}'
    )
    assert isinstance(report, Report)
    return report


def test_the_graph_is_sent_each_report_without_its_signals() -> None:
    """Only the resolver uses the offender's signals: the actor-reports topic holds the rest
    of the row (and the links the signals made), no copy of the pseudonymised values."""
    report = parse_report(
        b'{"report_id":"r1","platform":"chirp","reported_at":"2025-01-01T00:00:00Z",'
        b'"category":"other","offender":{"account":"a","signals":{"device_id":"d-1"}},'
        b'"victim":{"account":"v","region":"kent"},"text":"Can I tell you a secret?"}'
    )
    assert isinstance(report, Report)
    row = pseudonymise(report, Pseudonyms(pseudonym_key_for(SECRET))).to_row()
    assert row[7]  # the identity topic's row has them: the resolver links by them
    resolver = AliasResolver(SECRET, window_seconds=WINDOW)
    routed = route_rows(read_rows([[*row, 0, 0]]), resolver, LowWatermark(1), 4, False)
    ((_, [(_, record)]),) = routed.entries.items()
    assert record["kind"] == "report"
    assert record["report"] == [*row[:7], None, *row[8:10]]
    assert Report.from_row(record["report"]).offender_signals == {}


def _absorb(into: str, absorbed: str) -> dict[str, object]:
    """An absorb carrying an actor with nothing left (as a repeated merge sends)."""
    state = {"actor_id": absorbed, "edges": [], "links": [], "openers": {}, "merged": []}
    return {"kind": "absorb", "into": into, "from": absorbed, "state": state}


def _sequential_alerts(tmp_path: Path) -> tuple[list[bytes], list[tuple[object, ...]]]:
    """The stream the protocol tests use, and the alerts a sequential run raises on it."""
    simulate(tmp_path, seed=7, scale=3)
    lines = (tmp_path / "reports.jsonl").read_bytes().splitlines()
    sequential = Pipeline(SECRET, WINDOW, CrossRegionRule(), partitions=4).feed(lines, now=0.0)
    return lines, sorted((a.alert_id, a.accounts, a.report_ids) for a in sequential.alerts)


def distributed(
    lines: list[bytes],
    partitions: int,
    seed: int,
    redeliver: float = 0.0,
    pace: float = 0.3,
    pack: int = 1,
) -> list[tuple[str, tuple[str, ...]]]:
    """Run the protocol with one queue per partition, served in a random order.

    With `pack` over 1, each turn takes up to that many of a partition's records at once
    and applies them as the graph agent does a packed message (`handle_entries`).

    With `redeliver`, crashes are mimicked at that rate per report: the resolver sends the
    records of its last few reports again (as a restarted resolver does for reports it had
    not committed), and a graph sends an absorb twice (as a restarted graph does for a
    merge it had not committed)."""
    rng = random.Random(seed)
    recent: deque[list[tuple[str, dict[str, object]]]] = deque(maxlen=8)
    resolver = AliasResolver(SECRET, window_seconds=WINDOW)
    pseudonyms = Pseudonyms(pseudonym_key_for(SECRET))  # as the Pipeline it is compared with
    graphs = [
        PartitionGraph(RollingGraph(WINDOW, CrossRegionRule(), pseudonyms.reveal))
        for _ in range(partitions)
    ]
    queues: list[deque[tuple[str, dict[str, object]]]] = [deque() for _ in range(partitions)]
    alerts = []

    def step() -> None:
        ready = [i for i, queue in enumerate(queues) if queue]
        index = rng.choice(ready)
        if pack > 1:
            taken = min(rng.randint(1, pack), len(queues[index]))
            entries = [list(queues[index].popleft()) for _ in range(taken)]
            handled, unreadable = graphs[index].handle_entries(entries, now=0.0)
            assert unreadable == 0
        else:
            key, record = queues[index].popleft()
            handled = graphs[index].handle(key, record, now=0.0)
        alerts.extend(handled.alerts)
        for onward_key, onward in handled.sends:
            copies = 2 if rng.random() < redeliver else 1
            queues[partition_of(onward_key, partitions)].extend([(onward_key, onward)] * copies)

    for raw in lines:
        report = parse_report(raw)
        if not isinstance(report, Report):
            continue
        report = pseudonymise(report, pseudonyms)
        resolution = resolver.resolve(report)
        recent.append(resolution_records(resolution, report.to_row()))
        sent = [recent[-1]]
        if rng.random() < redeliver:
            sent += list(recent)[-rng.randint(1, len(recent)) :]  # a crash: sent again
        for records in sent:
            for key, record in records:
                queues[partition_of(key, partitions)].append((key, record))
        while any(queues) and rng.random() < pace:
            step()
    while any(queues):
        step()
    assert all(graph.held_records == 0 for graph in graphs)
    # A repeated alert id is suppressed downstream (the alerts topic is read back).
    unique = {alert.alert_id: alert for alert in alerts}.values()
    return sorted((alert.alert_id, alert.accounts, alert.report_ids) for alert in unique)


@pytest.mark.parametrize("schedule", [1, 2, 3])
def test_any_interleaving_of_partitions_raises_the_same_alerts(
    tmp_path: Path, schedule: int
) -> None:
    lines, expected = _sequential_alerts(tmp_path)
    assert len(expected) > 20
    assert distributed(lines, partitions=4, seed=schedule) == expected


@pytest.mark.parametrize("schedule", [1, 2, 3])
def test_packed_messages_raise_the_same_alerts_as_records_one_at_a_time(
    tmp_path: Path, schedule: int
) -> None:
    """`handle_entries` applies a report with no hold on its actor itself (the common case)
    and hands every other record to `handle`: the same alerts either way, holds included."""
    lines, expected = _sequential_alerts(tmp_path)
    assert distributed(lines, 4, seed=schedule, redeliver=0.3, pace=0.05, pack=8) == expected


@pytest.mark.parametrize("schedule", [1, 2, 3, 4, 5, 6])
def test_records_sent_again_after_crashes_raise_the_same_alerts_and_hold_nothing(
    tmp_path: Path, schedule: int
) -> None:
    """Every merge's `await` must find an absorb however many of each crashes repeat: an
    actor held for good would lose every later report (the SIGKILL test's last flake)."""
    lines, expected = _sequential_alerts(tmp_path)
    # Records pile up (a slow pace), so that holds meet several merges at once.
    assert distributed(lines, 4, seed=schedule, redeliver=0.3, pace=0.05) == expected


def test_records_for_an_actor_wait_for_the_absorb_they_follow() -> None:
    graph = PartitionGraph(RollingGraph(WINDOW, CrossRegionRule()))
    graph.handle("X", {"kind": "await", "from": "Y"}, 0.0)
    held = graph.handle("X", {"kind": "report", "report": _one_report().to_row()}, 0.0)
    assert held.outcomes == [] and graph.held_records == 2
    released = graph.handle("X", _absorb("X", "Y"), 0.0)
    assert [str(outcome) for outcome in released.outcomes] == ["accepted"]
    assert graph.held_records == 0


def test_each_await_takes_one_absorb_when_crashes_repeat_them() -> None:
    """A merge of Y into X, sent twice by a restarted resolver, while X also waits for Z:
    both absorbs from Y arrive while the head waits for Z's, and each `await` takes one."""
    graph = PartitionGraph(RollingGraph(WINDOW, CrossRegionRule()))
    for awaited in ("Z", "Y", "Y"):
        graph.handle("X", {"kind": "await", "from": awaited}, 0.0)
    graph.handle("X", {"kind": "report", "report": _one_report().to_row()}, 0.0)
    graph.handle("X", _absorb("X", "Y"), 0.0)
    graph.handle("X", _absorb("X", "Y"), 0.0)
    released = graph.handle("X", _absorb("X", "Z"), 0.0)
    assert [str(outcome) for outcome in released.outcomes] == ["accepted"]
    assert graph.held_records == 0
    # Absorbs applied before their `await`s came (redelivered): each `await` takes one.
    graph.handle("X", _absorb("X", "W"), 0.0)
    graph.handle("X", _absorb("X", "W"), 0.0)
    graph.handle("X", {"kind": "await", "from": "W"}, 0.0)
    graph.handle("X", {"kind": "await", "from": "W"}, 0.0)
    assert graph.held_records == 0


def test_alerts_do_not_depend_on_the_number_of_partitions(tmp_path: Path) -> None:
    simulate(tmp_path, seed=1, scale=12)
    lines = (tmp_path / "reports.jsonl").read_bytes().splitlines()
    results = [
        sorted(
            (alert.alert_id, alert.accounts, alert.report_ids)
            for alert in Pipeline(SECRET, WINDOW, CrossRegionRule(), partitions=n)
            .feed(lines, now=0.0)
            .alerts
        )
        for n in (1, 3, 8)
    ]
    assert results[0] == results[1] == results[2]


def test_the_window_follows_the_newest_event_in_the_whole_stream() -> None:
    """A late report is judged against the newest event anywhere, not on its partition only."""
    from datetime import timedelta

    from graph.identity import actor_id_for
    from tests.factories import encode, make_report

    # Two offenders whose actors sit on different partitions of two.
    names = [f"offender-{i}" for i in range(20)]
    quiet, busy = next(
        (a, b)
        for a in names
        for b in names
        if partition_of(actor_id_for(f"chirp:{a}", SECRET), 2)
        != partition_of(actor_id_for(f"chirp:{b}", SECRET), 2)
    )
    lines = [
        encode(make_report(quiet, "v1", "norfolk", at=timedelta(days=0))),
        encode(make_report(quiet, "v2", "suffolk", at=timedelta(days=300))),
        encode(make_report(busy, "w1", "kent", at=timedelta(days=400))),
        # Arrives late: by then the newest event is day 400, so day 0 is out of the window.
        encode(make_report(quiet, "v3", "devon", at=timedelta(days=200))),
    ]
    for partitions in (1, 2):
        run = Pipeline(SECRET, WINDOW, CrossRegionRule(), partitions=partitions).feed(lines, 0.0)
        assert run.alerts == [], partitions


def test_a_packed_message_is_applied_in_order_and_its_unreadable_entries_counted(
    tmp_path: Path,
) -> None:
    # `handle_entries` is the graph agent's loop over one packed message: the same as
    # handling each entry in turn, with an unreadable entry skipped and counted, not fatal.
    lines, _ = _sequential_alerts(tmp_path)
    resolver = AliasResolver(SECRET, window_seconds=WINDOW)
    pseudonyms = Pseudonyms(pseudonym_key_for(SECRET))
    entries: list[object] = []
    for raw in lines:
        report = parse_report(raw)
        if isinstance(report, Report):
            report = pseudonymise(report, pseudonyms)
            entries += [
                list(e) for e in resolution_records(resolver.resolve(report), report.to_row())
            ]
    unreadable = [
        ["only a key"],
        ["actor", {"kind": "unknown"}],
        ["actor", {"kind": "report", "report": [1]}],
        # An actor merged into itself (a resolver before session 23 could send one, and it
        # went round between the partitions forever).
        ["actor", {"kind": "merge", "from": "actor", "into": "actor"}],
        ["actor", {"kind": "await", "from": "actor"}],
        ["actor", _absorb("actor", "actor")],
    ]
    mixed = entries[:40] + unreadable[:1] + entries[40:90] + unreadable[1:] + entries[90:]

    def graph() -> PartitionGraph:
        return PartitionGraph(RollingGraph(WINDOW, CrossRegionRule(), pseudonyms.reveal))

    one_by_one, together = graph(), graph()
    outcomes, alerts, sends = [], [], []
    for key, record in entries:
        handled = one_by_one.handle(key, record, now=0.0)
        outcomes += handled.outcomes
        alerts += handled.alerts
        sends += handled.sends
    done, skipped = together.handle_entries(mixed, now=0.0)
    assert skipped == 6
    assert alerts, "the stream raises alerts"
    assert (done.outcomes, done.alerts, done.sends) == (outcomes, alerts, sends)
