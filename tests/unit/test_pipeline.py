"""The whole chain in-process: the same path the agents take, without a broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from graph.pipeline import Pipeline
from graph.rules import CrossRegionRule
from streams.simulate import SHAPES, simulate
from tests.factories import encode, make_report, serial_case


def pipeline() -> Pipeline:
    return Pipeline(b"test-secret", 365 * 86400.0, CrossRegionRule(3))


def test_reports_in_alert_out_with_bad_lines_rejected_and_counted() -> None:
    messages = [b"not json", *serial_case("tom"), b'{"report_id": 1}']
    run = pipeline().feed(messages, now=0)
    assert [alert.level for alert in run.alerts] == [3]
    assert [rejection.reason for rejection in run.rejections] == ["not_json", "missing_field"]
    assert run.outcomes == {"accepted": 3, "rejected": 2}


def test_each_offender_account_is_its_own_actor_until_linked() -> None:
    messages = [
        encode(make_report(f"account-{i}", f"v{i}", region, at=timedelta(days=i)))
        for i, region in enumerate(["norfolk", "suffolk", "kent"])
    ]
    assert pipeline().feed(messages, now=0).alerts == []


def test_actor_ids_are_pseudonymous_and_stable_for_a_secret() -> None:
    first = pipeline().feed(serial_case("tom"), now=0).alerts[0]
    second = pipeline().feed(serial_case("tom"), now=0).alerts[0]
    assert first.actor_id == second.actor_id
    assert "tom" not in first.actor_id
    other = Pipeline(b"another-secret", 365 * 86400.0, CrossRegionRule(3))
    assert other.feed(serial_case("tom"), now=0).alerts[0].actor_id != first.actor_id


@pytest.mark.parametrize("shape", SHAPES)
def test_each_linkage_shape_ends_as_one_actor_and_is_detected(tmp_path: Path, shape: str) -> None:
    truth = simulate(tmp_path, seed=11, scale=2)
    lines = (tmp_path / "reports.jsonl").read_bytes().splitlines()
    linkwatch = pipeline()
    alerts = linkwatch.feed(lines, now=0).alerts
    person_of = {a: p for p, person in truth["people"].items() for a in person["accounts"]}
    people = [p for p, person in truth["people"].items() if person.get("shape") == shape]
    assert people
    for person in people:
        accounts = truth["people"][person]["accounts"]
        assert len(accounts) >= 3
        assert len({linkwatch.actor_of(account) for account in accounts}) == 1
        assert any({person_of[a] for a in alert.accounts} == {person} for alert in alerts)
    assert all(len({person_of[a] for a in alert.accounts}) == 1 for alert in alerts)
