"""Merges in the rolling graph, brigades against serial actors, and the evidence in alerts."""

from __future__ import annotations

from datetime import timedelta

from graph.contract import Report, parse_report
from graph.pipeline import Pipeline
from graph.rules import CrossRegionRule
from graph.window import RollingGraph
from tests.factories import encode, make_report

DAY = 86400.0
OPENER = "Can I tell you a secret? You seem lovely."


def report(*args: object, **kwargs: object) -> Report:
    parsed = parse_report(encode(make_report(*args, **kwargs)))  # type: ignore[arg-type]
    assert isinstance(parsed, Report)
    return parsed


def test_two_actors_below_threshold_alert_the_moment_they_merge() -> None:
    rolling = RollingGraph(365 * DAY, CrossRegionRule(3))
    assert not rolling.apply("X", report("a", "v1", "norfolk"), 0).alerts
    assert not rolling.apply("X", report("a", "v2", "suffolk", at=timedelta(days=5)), 0).alerts
    assert not rolling.apply("Y", report("b", "v3", "kent", at=timedelta(days=9)), 0).alerts
    state = rolling.detach("Y", into="X")
    assert state is not None
    [alert] = rolling.absorb("X", state, now=0)
    assert alert.level == 3
    assert alert.accounts == ("chirp:a", "chirp:b")
    assert alert.merged_actor_ids == ("Y",)
    assert rolling.actor("Y") is None and rolling.forwarded_to("Y") == "X"
    assert rolling.live_edges == 3


def test_absorbing_the_same_state_twice_changes_nothing() -> None:
    rolling = RollingGraph(365 * DAY, CrossRegionRule(3))
    rolling.apply("Y", report("b", "v3", "kent"), 0)
    state = rolling.detach("Y", into="X")
    assert state is not None
    rolling.absorb("X", state, 0)
    rolling.absorb("X", state, 0)
    actor = rolling.actor("X")
    assert actor is not None and actor.edge_count == 1 and rolling.live_edges == 1


def test_seed_story_four_accounts_linked_by_signals_raise_one_alert_with_the_why() -> None:
    pipeline = Pipeline(b"secret", 365 * DAY, CrossRegionRule(3))
    accounts = [
        ("tom.ashby.photo", "ellie", "norfolk", {"phone_hash": "p1"}),
        ("t.ashby_art", "sam", "suffolk", {"phone_hash": "p1", "email_hash": "e1"}),
        ("ashby.lens", "jess", "kent", {"email_hash": "e1", "device_id": "d1"}),
        ("lens.tom", "ruth", "devon", {"device_id": "d1"}),
    ]
    messages = [
        encode(
            make_report(
                acct, victim, region, at=timedelta(days=60 * i), text=OPENER, signals=signals
            )
        )
        for i, (acct, victim, region, signals) in enumerate(accounts)
    ]
    run = pipeline.feed(messages, now=0)
    assert [(alert.kind, alert.level) for alert in run.alerts] == [("serial", 3), ("serial", 4)]
    final = run.alerts[-1].to_dict()
    assert final["accounts"] == sorted(f"chirp:{a}" for a, *_ in accounts)
    assert {link["signal"] for link in final["links"]} == {"phone_hash", "email_hash", "device_id"}
    assert final["shared_openers"] == [{"opener": "can i tell you a secret", "accounts": 4}]
    assert "4 accounts used the same opener" in final["reason"]
    assert "linked by shared device_id, email_hash, phone_hash" in final["reason"]


def test_a_brigade_is_reported_as_a_brigade_not_as_serial_harassment() -> None:
    pipeline = Pipeline(b"secret", 365 * DAY, CrossRegionRule(3, brigade_victims=10))
    regions = [f"region-{i}" for i in range(30)]
    messages = [
        encode(make_report("target", f"reporter-{i}", regions[i % 30], at=timedelta(minutes=7 * i)))
        for i in range(300)
    ]
    run = pipeline.feed(messages, now=0)
    assert [alert.kind for alert in run.alerts] == ["brigade"]
    brigade = run.alerts[0]
    assert brigade.alert_id.endswith("-brigade")
    assert brigade.victim_count == 10 and brigade.level == 10
    assert "brigade" in brigade.reason


def test_a_serial_actor_two_victims_on_one_day_counts_one_region_for_that_day() -> None:
    rule = CrossRegionRule(3, episode_hours=12)
    same_day = [(0.0, "norfolk"), (3600.0, "suffolk")]
    assert rule.level([*same_day, (30 * DAY, "kent")]) == 0
    assert rule.level([*same_day, (30 * DAY, "kent"), (60 * DAY, "devon")]) == 3


def test_level_matches_one_region_per_episode() -> None:
    rule = CrossRegionRule(3)
    victims = [(0.0, "a"), (1.0, "b"), (10 * DAY, "a"), (20 * DAY, "a"), (30 * DAY, "c")]
    # Episodes {a,b}, {a}, {a}, {c}: at most three distinct regions, one per episode.
    assert rule.level(victims) == 3
