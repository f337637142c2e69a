"""`linkwatch push` and `linkwatch replay` against a real broker: what arrives, byte for byte."""

from __future__ import annotations

import sqlite3

import pytest

from streams.journal import IntakeJournal
from streams.push import MAX_LINE_BYTES
from tests.factories import encode, make_report, serial_case
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration


def test_push_sends_every_line_as_it_is_and_counts_the_one_too_long(
    deployment: Deployment,
) -> None:
    good = serial_case("tom.ashby", regions=3)
    bad = b'{"report_id": "x"'
    at_limit = b'{"text": "' + b"a" * (MAX_LINE_BYTES - 12) + b'"}'
    assert len(at_limit) == MAX_LINE_BYTES
    too_long = b'{"text": "' + b"b" * MAX_LINE_BYTES + b'"}'
    path = deployment.tmp_path / "mixed.jsonl"
    lines = [good[0], b"", bad, too_long, good[1] + b"\r", at_limit, b"  ", good[2]]
    path.write_bytes(b"\n".join(lines))  # the last line has no newline

    result = deployment.cli("push", str(path))

    assert result.returncode == 1, result.stderr
    topic = deployment.settings.reports_topic
    assert f"sent 5 reports to {topic}, skipped 2 blank lines" in result.stdout
    assert "1 reports were not delivered" in result.stderr
    assert f"line 4 is {len(too_long):,} bytes" in result.stderr
    arrived = [record.value for record in deployment.read(topic)]
    assert sorted(arrived) == sorted([good[0], bad, good[1], at_limit, good[2]])
    assert all(record.key is None for record in deployment.read(topic))


def test_push_with_a_rate_cap_still_delivers_everything(deployment: Deployment) -> None:
    reports = [encode(make_report(f"offender-{i}", f"victim-{i}")) for i in range(300)]
    path = deployment.tmp_path / "paced.jsonl"
    path.write_bytes(b"".join(report + b"\n" for report in reports))

    result = deployment.cli("push", "--rate", "2000", str(path))

    assert result.returncode == 0, result.stderr
    assert f"sent 300 reports to {deployment.settings.reports_topic}" in result.stdout
    arrived = [record.value for record in deployment.read(deployment.settings.reports_topic)]
    assert sorted(arrived) == sorted(reports)


def journal_with(deployment: Deployment, bodies: list[bytes]) -> IntakeJournal:
    """The journal a worker of this deployment keeps, holding these accepted reports."""
    settings = deployment.settings
    journal = IntakeJournal(settings.data_dir / f"{settings.namespace}-intake.sqlite3")
    journal.record([("chirp", f"r-{i}", body) for i, body in enumerate(bodies)])
    return journal


def test_replay_all_resends_every_journaled_report(deployment: Deployment) -> None:
    bodies = serial_case("tom.ashby", regions=4)
    journal_with(deployment, bodies).close()

    result = deployment.cli("replay", "--all")

    assert result.returncode == 0, result.stderr
    topic = deployment.settings.reports_topic
    assert f"re-sent 4 reports from 1 intake journal to {topic}" in result.stdout
    arrived = [record.value for record in deployment.read(topic)]
    assert sorted(arrived) == sorted(bodies)


def test_replay_since_resends_only_what_was_accepted_from_then_on(
    deployment: Deployment,
) -> None:
    bodies = serial_case("tom.ashby", regions=3)
    journal = journal_with(deployment, bodies)
    journal.close()
    path = deployment.settings.data_dir / f"{deployment.settings.namespace}-intake.sqlite3"
    with sqlite3.connect(path) as db:  # accepted on 1 January 2025, long before the others
        db.execute("UPDATE accepted SET accepted_at = 1735689600 WHERE report_id = 'r-0'")

    result = deployment.cli("replay", "--since", "2025-06-01T00:00:00Z")

    assert result.returncode == 0, result.stderr
    arrived = [record.value for record in deployment.read(deployment.settings.reports_topic)]
    assert sorted(arrived) == sorted(bodies[1:])


def test_replay_without_a_journal_says_where_it_looked(deployment: Deployment) -> None:
    result = deployment.cli("replay", "--all")

    assert result.returncode == 2
    assert f"no intake journal ({deployment.settings.namespace}-intake.sqlite3)" in result.stderr
