"""The rolling graph and the rule: redelivery, event time, expiry, escalation, alert contents."""

from __future__ import annotations

import gc
import sys
from datetime import timedelta

from graph.contract import Report, parse_report
from graph.rules import CrossRegionRule
from graph.window import Edge, Outcome, RollingGraph
from tests.factories import encode, make_report

DAY = 86400.0


def report(*args: object, **kwargs: object) -> Report:
    parsed = parse_report(encode(make_report(*args, **kwargs)))  # type: ignore[arg-type]
    assert isinstance(parsed, Report)
    return parsed


def graph(window_days: float = 365, min_regions: int = 3) -> RollingGraph:
    return RollingGraph(window_days * DAY, CrossRegionRule(min_regions))


def apply_all(rolling: RollingGraph, reports: list[Report], actor: str = "actor-1") -> list[int]:
    """Apply in order; returns the levels of the serial alerts raised."""
    levels = []
    for item in reports:
        applied = rolling.apply(actor, item, now=0.0)
        levels += [alert.level for alert in applied.alerts if alert.kind == "serial"]
    return levels


def test_three_victims_in_three_regions_raise_one_alert_with_the_contract_fields() -> None:
    rolling = graph()
    reports = [
        report("tom", "ellie", "norfolk", report_id="a", category="impersonation"),
        report("tom", "sam", "suffolk", report_id="b", at=timedelta(days=30)),
        report("tom", "jess", "kent", report_id="c", at=timedelta(days=60)),
    ]
    alerts = [rolling.apply("actor-1", item, now=1e9).alerts for item in reports]
    assert alerts[:2] == [(), ()]
    [alert] = alerts[2]
    document = alert.to_dict()
    assert document["alert_id"] == "actor-1-L3"
    assert document["kind"] == "serial"
    assert document["level"] == 3
    assert document["regions"] == ["kent", "norfolk", "suffolk"]
    assert document["victim_count"] == 3
    assert document["accounts"] == ["chirp:tom"]
    assert document["platforms"] == ["chirp"]
    assert document["categories"] == ["harassment", "impersonation"]
    assert document["report_ids"] == ["chirp:a", "chirp:b", "chirp:c"]
    assert document["first_seen"] == "2025-03-01T12:00:00Z"
    assert document["last_seen"] == "2025-04-30T12:00:00Z"
    assert document["raised_at"] == "2001-09-09T01:46:40Z"
    assert "victims in 3 regions (kent, norfolk, suffolk)" in document["reason"]


def test_many_victims_in_two_regions_never_alert() -> None:
    rolling = graph()
    reports = [
        report("tom", f"v{i}", ["kent", "essex"][i % 2], at=timedelta(days=i)) for i in range(40)
    ]
    assert apply_all(rolling, reports) == []


def test_one_victim_who_moves_counts_in_one_region_only() -> None:
    rolling = graph()
    reports = [
        report("tom", "ellie", "norfolk"),
        report("tom", "ellie", "suffolk", at=timedelta(days=1)),
        report("tom", "ellie", "kent", at=timedelta(days=2)),
        report("tom", "sam", "kent", at=timedelta(days=3)),
    ]
    assert apply_all(rolling, reports) == []
    actor = rolling.actor("actor-1")
    assert actor is not None
    assert actor.regions() == {"kent"}
    edge = actor.edge("chirp:ellie")
    assert edge is not None and edge.regions == {"norfolk", "suffolk", "kent"}


def test_a_redelivered_report_changes_nothing() -> None:
    rolling = graph()
    first = report("tom", "ellie", "norfolk", report_id="same")
    assert rolling.apply("actor-1", first, now=0).outcome is Outcome.ACCEPTED
    again = rolling.apply("actor-1", first, now=0)
    assert again.outcome is Outcome.DUPLICATE
    assert rolling.live_edges == 1
    actor = rolling.actor("actor-1")
    edge = actor.edge("chirp:ellie") if actor is not None else None
    assert edge is not None and edge.report_ids == {"same"}


def test_redelivery_of_the_completing_report_does_not_alert_twice() -> None:
    rolling = graph()
    reports = [
        report("tom", f"v{i}", region, at=timedelta(days=i))
        for i, region in enumerate(["a", "b", "c"])
    ]
    assert apply_all(rolling, reports + reports) == [3]


def test_out_of_order_events_inside_the_window_count() -> None:
    rolling = graph(window_days=30)
    reports = [
        report("tom", "v3", "kent", at=timedelta(days=20)),
        report("tom", "v1", "norfolk", at=timedelta(days=0)),  # 20 days late: still inside
        report("tom", "v2", "suffolk", at=timedelta(days=5)),
    ]
    assert apply_all(rolling, reports) == [3]


def test_an_event_older_than_the_window_is_too_old_and_changes_nothing() -> None:
    rolling = graph(window_days=30)
    assert apply_all(rolling, [report("tom", "v1", "kent", at=timedelta(days=100))]) == []
    late = rolling.apply("actor-1", report("tom", "v2", "essex", at=timedelta(days=60)), now=0)
    assert late.outcome is Outcome.TOO_OLD
    assert rolling.live_edges == 1


def test_edges_expire_when_the_newest_event_moves_past_the_window() -> None:
    rolling = graph(window_days=30)
    reports = [
        report("tom", "v1", "norfolk", at=timedelta(days=0)),
        report("tom", "v2", "suffolk", at=timedelta(days=10)),
        # Forty days later the first two victims are out of the window: no alert.
        report("tom", "v3", "kent", at=timedelta(days=50)),
    ]
    assert apply_all(rolling, reports) == []
    assert rolling.live_edges == 1
    # Another actor's event moves the watermark on; tom's last edge expires, and tom with it.
    rolling.apply("actor-2", report("ann", "v9", "kent", at=timedelta(days=81)), now=0)
    assert rolling.actor("actor-1") is None
    assert rolling.live_edges == 1


def test_after_a_jump_in_event_time_expiry_trails_but_no_actor_is_judged_by_old_edges() -> None:
    rolling = graph(window_days=30)
    for n in range(50):  # fifty actors, each with victims in two regions
        for i, region in enumerate(("norfolk", "suffolk")):
            rolling.apply(f"actor-{n}", report(f"a{n}", f"v{n}-{i}", region), now=0)
    assert rolling.live_edges == 100
    # A year later: the next record expires a slice of the old actors, not all of them.
    rolling.apply("actor-new", report("new", "x", "kent", at=timedelta(days=365)), now=0)
    assert 1 < rolling.live_edges < 100
    # An old actor's next victim is judged by its window alone: one region, no alert.
    later = report("a49", "v49-2", "kent", at=timedelta(days=365))
    assert rolling.apply("actor-49", later, now=0).alerts == ()
    assert rolling.actor("actor-49").regions() == {"kent"}  # type: ignore[union-attr]
    # What readers see is the window as it is, and expiry can be caught up in slices.
    assert rolling.actor("actor-25") is None
    while rolling.expire_some(10):
        pass
    assert rolling.live_edges == 2
    assert sorted(actor.actor_id for actor in rolling.actors()) == ["actor-49", "actor-new"]


def test_edges_a_second_past_the_window_are_gone_for_the_rule_and_readers() -> None:
    # Expiry checks an actor once the cutoff has passed the whole slice of event time
    # (1/256 of the window) it is filed under, so it trails the cutoff by up to a slice;
    # the rule and every reader must not see the edges in that slice meanwhile.
    rolling = graph(window_days=30)
    rolling.apply("actor-1", report("tom", "v0", "norfolk"), now=0)
    rolling.apply("actor-2", report("ann", "w0", "norfolk"), now=0)
    rolling.apply("actor-1", report("tom", "v1", "suffolk", at=timedelta(days=29)), now=0)
    just_past = timedelta(days=30, seconds=1)  # v0 and w0 a second too old
    rolling.apply("actor-9", report("new", "x", "kent", at=just_past), now=0)
    # With v0, a third region in a third episode: a level-3 alert. Without, two regions.
    assert rolling.apply("actor-1", report("tom", "v2", "kent", at=just_past), now=0).alerts == ()
    assert rolling.actor("actor-1").regions() == {"suffolk", "kent"}  # type: ignore[union-attr]
    assert sorted(actor.actor_id for actor in rolling.actors()) == ["actor-1", "actor-9"]
    assert rolling.live_edges == 3


def test_the_actor_table_gives_its_memory_back_once_the_window_has_slid_past_it() -> None:
    rolling = graph(window_days=30)
    for n in range(2_000):  # all inside one window: nothing expires while they arrive
        rolling.apply(f"actor-{n}", report(f"a{n}", f"v{n}", "kent"), now=0)
    full = sys.getsizeof(rolling._actors)
    rolling.apply("actor-new", report("new", "x", "kent", at=timedelta(days=365)), now=0)
    while rolling.expire_some(100):
        pass
    # A dict keeps its hash table when entries go; the table must have been copied down.
    assert len(rolling._actors) == 1
    assert sys.getsizeof(rolling._actors) * 20 < full


def test_an_actor_finds_every_victim_again_as_it_grows_past_eight_and_shrinks_back() -> None:
    # An actor holds a few edges in a tuple and many in a dict (graph/window.py); the
    # lookups a report makes (duplicate or new victim) must not notice the change.
    rolling = graph(window_days=30)
    victims = [report("tom", f"v{n}", "kent", report_id=f"r{n}", at=timedelta(days=n))
               for n in range(12)]  # fmt: skip
    for item in victims:
        assert rolling.apply("actor-1", item, now=0).outcome is Outcome.ACCEPTED
    for item in victims:
        assert rolling.apply("actor-1", item, now=0).outcome is Outcome.DUPLICATE
    # Day 38: victims 0-7 have left the window; four are left, and come back as duplicates.
    rolling.apply("actor-2", report("ann", "x", "kent", at=timedelta(days=38)), now=0)
    actor = rolling.actor("actor-1")
    assert actor is not None and actor.edge_count == 4
    assert sorted(edge.victim for edge in actor.edges()) == [f"chirp:v{n}" for n in (10, 11, 8, 9)]
    for item in victims[8:]:
        assert rolling.apply("actor-1", item, now=0).outcome is Outcome.DUPLICATE
    assert rolling.apply("actor-1", victims[0], now=0).outcome is Outcome.TOO_OLD
    again = report("tom", "v0", "essex", report_id="r-new", at=timedelta(days=38))
    assert rolling.apply("actor-1", again, now=0).outcome is Outcome.ACCEPTED
    assert rolling.live_edges == 6  # actor-1's five and actor-2's one


def test_an_actor_that_alerted_and_expired_does_not_raise_the_same_alert_when_it_returns() -> None:
    rolling = graph(window_days=30)
    regions = ("norfolk", "suffolk", "kent", "essex")
    for n in range(70):  # enough alerts for them to be folded into arrays (graph/raised.py)
        for i, region in enumerate(regions[:3]):
            victim = report(f"a{n}", f"v{n}-{i}", region, at=timedelta(days=i))
            rolling.apply(f"actor-{n}", victim, now=0)
    assert rolling.raised_level("actor-7") == 3
    rolling.apply("actor-new", report("new", "x", "kent", at=timedelta(days=100)), now=0)
    while rolling.expire_some(10):
        pass
    assert rolling.live_edges == 1 and not rolling._raised._recent
    back = [report("a7", f"w{i}", region, at=timedelta(days=101 + i))
            for i, region in enumerate(regions)]  # fmt: skip
    assert apply_all(rolling, back[:3], actor="actor-7") == []  # level 3 was raised before
    assert apply_all(rolling, back[3:], actor="actor-7") == [4]
    assert rolling.raised_level("actor-7") == 4 and rolling.raised_level("actor-8") == 3


def test_a_new_report_keeps_an_edge_alive() -> None:
    rolling = graph(window_days=30)
    reports = [
        report("tom", "v1", "norfolk", at=timedelta(days=0)),
        report("tom", "v1", "norfolk", at=timedelta(days=25)),
        report("tom", "v2", "suffolk", at=timedelta(days=40)),
        report("tom", "v3", "kent", at=timedelta(days=50)),
    ]
    assert apply_all(rolling, reports) == [3]


def test_escalation_raises_a_new_level_each_time_the_regions_grow() -> None:
    rolling = graph()
    regions = ["norfolk", "suffolk", "kent", "kent", "devon", "essex"]
    reports = [
        report("tom", f"v{i}", region, at=timedelta(days=i)) for i, region in enumerate(regions)
    ]
    assert apply_all(rolling, reports) == [3, 4, 5]


def test_no_realert_when_regions_shrink_and_grow_back_to_a_raised_level() -> None:
    rolling = graph(window_days=30)
    reports = [
        report("tom", "v1", "norfolk", at=timedelta(days=0)),
        report("tom", "v2", "suffolk", at=timedelta(days=1)),
        report("tom", "v3", "kent", at=timedelta(days=2)),
        # v1 and v2 expire; two new regions bring it back to three.
        report("tom", "v4", "devon", at=timedelta(days=40)),
        report("tom", "v5", "essex", at=timedelta(days=41)),
    ]
    assert apply_all(rolling, reports) == [3]
    assert rolling.raised_level("actor-1") == 3


def test_alerts_already_published_are_not_raised_again() -> None:
    rolling = graph()
    rolling.mark_raised({"actor_id": "actor-1", "kind": "serial", "level": 3})
    reports = [
        report("tom", f"v{i}", r, at=timedelta(days=i)) for i, r in enumerate(["a", "b", "c", "d"])
    ]
    assert apply_all(rolling, reports) == [4]


def test_min_regions_is_configurable() -> None:
    rolling = graph(min_regions=2)
    reports = [report("tom", "v1", "a"), report("tom", "v2", "b", at=timedelta(days=1))]
    assert apply_all(rolling, reports) == [2]


def test_applying_reports_leaves_nothing_for_the_cycle_collector() -> None:
    """The worker moves its survivors out of the cycle collector's sight every 10 s
    (streams/memory.py:freeze), so garbage in reference cycles that is pending then is
    never freed: the rule's matching made a cycle per evaluation (a recursive closure),
    and after the window slid past 100,000 reports 17,690 such objects were left, pinning
    about 20 MB of the worker's heap (change 18)."""
    rolling = graph()
    regions = ["norfolk", "suffolk", "kent", "devon", "essex", "kent", "cumbria"]
    reports = [
        report(f"actor-{n % 5}", f"v{n}", regions[n % len(regions)], at=timedelta(days=n))
        for n in range(200)
    ]
    gc.collect()
    gc.disable()
    try:
        levels = [
            alert.level
            for n, item in enumerate(reports)
            for alert in rolling.apply(f"actor-{n % 5}", item, now=0.0).alerts
        ]
        assert len(levels) > 10  # the rule ran, and raised levels
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_an_edge_keeps_its_victim_and_report_ids_apart_however_their_text_runs_together() -> None:
    # An edge holds its victim and first report id in one string (graph/window.py): a
    # report id that ends the victim's text, or a victim that starts another's, must
    # still be told apart, through more reports, a merge and a round trip.
    edge = Edge("chirp:v1", "kent", 10.0, "1", "harassment", "chirp:tom")
    assert (edge.victim, edge.report_ids) == ("chirp:v1", frozenset({"1"}))
    assert edge.is_victim("chirp:v1") and not edge.is_victim("chirp:v11")
    assert not edge.is_victim("chirp:v")
    assert edge.has_report("1") and not edge.has_report("v11") and not edge.has_report("11")
    edge.add_report(20.0, "essex", "11", "threats", "chirp:tom")
    edge.add_report(30.0, "essex", "1", "threats", "chirp:tom")  # the first id again
    other = Edge("chirp:v1", "kent", 5.0, "v1", "harassment", "chirp:ann")
    other.add_report(6.0, "kent", "11", "harassment", "chirp:ann")
    edge.merge(other)
    assert edge.report_ids == {"1", "11", "v1"}
    assert sorted(edge.report_id_values()) == ["1", "11", "v1"]  # each once
    copy = Edge.from_dict(edge.to_dict())
    assert copy.to_dict() == edge.to_dict()
    assert copy.to_dict()["report_ids"] == ["1", "11", "v1"]
    assert (copy.victim, copy.first_seen, copy.last_seen, copy.region) == (
        "chirp:v1",
        5.0,
        30.0,
        "essex",
    )


def test_an_edge_of_one_report_is_held_packed_until_a_second_report_and_reads_the_same() -> None:
    # Most edges hold one report, and are held as one bytes object (graph/window.py): what
    # the rule and readers see of them must be what an Edge would show, in the same order,
    # and a second report must turn that edge into an Edge for good, losing nothing.
    rolling = graph()
    first = [
        report("tom", "zoë", "norfolk", report_id="é1", at=timedelta(days=1)),
        report("tom", "zoë2", "suffolk", report_id="2", category="doxxing", at=timedelta(days=2)),
        report("tom", "zo", "kent", report_id="3", at=timedelta(days=3)),
    ]
    for item in first:
        assert rolling.apply("actor-1", item, now=0.0).outcome is Outcome.ACCEPTED
    actor = rolling.actor("actor-1")
    assert actor is not None
    assert [type(item) for item in actor.items()] == [bytes, bytes, bytes]
    expected = [
        Edge(item.victim_key, item.victim_region, item.event_time, item.report_id, item.category,
             item.offender_key).to_dict()
        for item in first
    ]  # fmt: skip
    assert [edge.to_dict() for edge in actor.edges()] == expected
    assert actor.accounts() == {"chirp:tom"} and actor.regions() == {"norfolk", "suffolk", "kent"}
    assert actor.victims() == [(item.event_time, item.victim_region) for item in first]
    again = rolling.apply("actor-1", first[0], now=0.0)
    assert again.outcome is Outcome.DUPLICATE
    actor = rolling.actor("actor-1")  # what `actor` gives is the actor as it was then
    assert actor is not None and [type(item) for item in actor.items()] == [bytes] * 3
    later = report("ann", "zoë2", "essex", report_id="4", at=timedelta(days=4))
    assert rolling.apply("actor-1", later, now=0.0).outcome is Outcome.ACCEPTED
    actor = rolling.actor("actor-1")
    assert actor is not None
    assert [type(item) for item in actor.items()] == [bytes, Edge, bytes]  # in its place
    edge = actor.edge("chirp:zoë2")
    assert edge is not None and edge.report_ids == {"2", "4"}
    assert edge.accounts == {"chirp:tom", "chirp:ann"} and edge.regions == {"suffolk", "essex"}
    assert edge.categories == {"doxxing", "harassment"} and edge.region == "essex"
    assert actor.find("chirp:zoë") is not None and actor.find("chirp:zo\u00eb3") is None


def test_a_victims_pseudonym_is_packed_as_the_bytes_its_digits_spell_and_reads_the_same() -> None:
    # Intake's victim pseudonyms (`v_` and 20 lowercase hex digits) are packed as the 10
    # bytes the digits spell and the platform's number: 15 bytes less an edge here. Victims
    # that only look like one (upper case, a space, a digit more) are packed as their text,
    # and none is taken for another.
    rolling = graph()
    digits = "0123456789abcdef0123"
    victims = [f"v_{digits}", f"v_{digits.upper()}", f"v_{digits[:-1]} ", f"v_{digits}4",
               f"v_{digits[:-1]}4", "v_"]  # fmt: skip
    reports = [
        report("tom", victim, "norfolk", report_id=f"r{n}", at=timedelta(days=n))
        for n, victim in enumerate(victims)
    ]
    for item in reports:
        assert rolling.apply("actor-1", item, now=0.0).outcome is Outcome.ACCEPTED
    actor = rolling.actor("actor-1")
    assert actor is not None
    held = list(actor.items())
    assert [type(item) for item in held] == [bytes] * len(victims)
    sizes = [len(item) for item in held]
    assert sizes[0] == sizes[1] - 15 and sizes[4] == sizes[1] - 15
    assert [edge.victim for edge in actor.edges()] == [f"chirp:{victim}" for victim in victims]
    for victim in victims:
        edge = actor.find(f"chirp:{victim}")
        assert edge is not None and actor.unpacked(edge).victim == f"chirp:{victim}"
    assert actor.find(f"chirp:v_{digits[:-1]}5") is None and actor.find(f"v_{digits}") is None
    # A platform new to a full name table: its victims are held as their text.
    from graph import window

    limit = window._NAMES.limit
    window._NAMES.limit = len(window._NAMES.names)
    try:
        late = report("tom", f"v_{digits}", "kent", platform="brand-new", report_id="late")
        assert rolling.apply("actor-1", late, now=0.0).outcome is Outcome.ACCEPTED
        actor = rolling.actor("actor-1")
        assert actor is not None
        held = [item for item in actor.items() if isinstance(item, bytes) and b"late" in item]
        assert len(held) == 1 and f"brand-new:v_{digits}".encode() in held[0]
        assert actor.find(f"brand-new:v_{digits}") is not None
    finally:
        window._NAMES.limit = limit


def test_edges_of_other_accounts_are_packed_with_them_and_the_rule_sees_no_difference() -> None:
    # An edge whose account is not its actor's is packed naming that account; when the
    # table of region and category names is full, edges are Edge objects. The alerts, the
    # edges, and what erasing one account leaves are the same either way.
    from graph import window

    reports = [
        report(f"acct-{n % 3}", f"v{n}", f"full-table-{n % 4}", report_id=f"r{n}",
               at=timedelta(days=10 * n))
        for n in range(12)
    ]  # fmt: skip

    def held() -> tuple[list[dict[str, object]], list[type], list[dict[str, object]], set[str]]:
        rolling = graph()
        raised = [a.to_dict() for item in reports for a in rolling.apply("a", item, 0.0).alerts]
        actor = rolling.actor("a")
        assert actor is not None
        kinds, edges = [type(item) for item in actor.items()], [e.to_dict() for e in actor.edges()]
        assert rolling.apply("a", reports[1], 0.0).outcome is Outcome.DUPLICATE  # acct-1's
        rolling.erase("a", "chirp:acct-1", None)
        actor = rolling.actor("a")
        assert actor is not None and actor.accounts() == {"chirp:acct-0", "chirp:acct-2"}
        return raised, kinds, edges, {edge.victim for edge in actor.edges()}

    limit = window._NAMES.limit
    window._NAMES.limit = len(window._NAMES.names)  # full: these regions are new to it
    try:
        whole = held()
    finally:
        window._NAMES.limit = limit
    assert whole[1] == [Edge] * 12
    packed = held()
    assert packed[1] == [bytes] * 12  # acct-0's, and the other accounts' naming them
    assert whole[0] == packed[0] and [alert["level"] for alert in packed[0]] == [3, 4]
    assert whole[2:] == packed[2:] and len(packed[3]) == 8
    assert [edge["accounts"] for edge in packed[2]] == [[f"chirp:acct-{n % 3}"] for n in range(12)]


def test_erasing_an_actors_account_leaves_no_trace_of_it_on_the_actor() -> None:
    rolling = graph()
    rolling.apply("a", report("tom", "ellie", "kent", report_id="1"), now=0.0)
    rolling.apply("a", report("ann", "sam", "essex", report_id="2"), now=0.0)
    rolling.erase("a", "chirp:tom", None)
    actor = rolling.actor("a")
    assert actor is not None and actor.account is None
    assert [edge.victim for edge in actor.edges()] == ["chirp:sam"]
    assert actor.accounts() == {"chirp:ann"}
    rolling.apply("a", report("ann", "jess", "kent", report_id="3"), now=0.0)
    assert actor.account == "chirp:ann" and actor.accounts() == {"chirp:ann"}


def test_an_actor_of_one_account_and_one_report_edges_holds_them_in_one_bytes_object() -> None:
    # Most actors hold their account and packed edges in one bytes object (graph/window.py:
    # Actor), until an edge needs more: a second report, or one more than _BLOB_EDGES.
    from graph.window import _BLOB_EDGES as most

    rolling = graph(window_days=30)
    for n in range(most):
        item = report("tom", f"v{n}", f"region-{n % 3}", report_id=f"r{n}", at=timedelta(days=n))
        rolling.apply("a", item, now=0.0)
    actor = rolling.actor("a")
    assert actor is not None and isinstance(actor._edges, bytes)
    assert actor.edge_count == most and actor.account == "chirp:tom"
    assert [edge.victim for edge in actor.edges()] == [f"chirp:v{n}" for n in range(most)]
    assert actor.find("chirp:v3") is not None and actor.find("chirp:v") is None
    late = report("tom", f"v{most}", "region-2", report_id="late", at=timedelta(days=32))
    rolling.apply("a", late, now=0.0)  # v0 and v1 leave the window
    actor = rolling.actor("a")
    assert actor is not None and isinstance(actor._edges, bytes) and actor.edge_count == most - 1
    assert [edge.victim for edge in actor.edges()] == [f"chirp:v{n}" for n in range(2, most + 1)]
    assert actor.victims() == [(edge.first_seen, edge.region) for edge in actor.edges()]
    for n in (most + 1, most + 2):
        item = report("tom", f"v{n}", "region-0", report_id=f"r{n}", at=timedelta(days=32))
        rolling.apply("a", item, now=0.0)
    actor = rolling.actor("a")
    assert actor is not None and isinstance(actor._edges, dict) and actor.edge_count == most + 1
    assert actor.victims() == [(edge.first_seen, edge.region) for edge in actor.edges()]
    assert [edge.victim for edge in actor.edges()] == [f"chirp:v{n}" for n in range(2, most + 3)]


def test_an_actor_stored_as_its_bytes_keeps_its_place_in_expiry() -> None:
    # A bare actor is stored as its bytes alone, its expiry time in them (graph/window.py:
    # Actor.bare): expiry, which files actor ids, must still find its old edges without a
    # record of its own, and forget it once they are all gone.
    rolling = graph(window_days=30)
    for n, day in enumerate((0, 10)):
        item = report("tom", f"v{n}", "kent", report_id=f"r{n}", at=timedelta(days=day))
        rolling.apply("a", item, now=0.0)
    assert isinstance(rolling._actors["a"], bytes) and rolling.live_edges == 2
    for day in (31, 41):  # another actor's reports move the watermark on
        item = report("ann", f"w{day}", "essex", report_id=f"q{day}", at=timedelta(days=day))
        rolling.apply("b", item, now=0.0)
        if day == 31:
            assert isinstance(rolling._actors["a"], bytes) and rolling.live_edges == 2
            assert [edge.victim for edge in rolling.actor("a").edges()] == ["chirp:v1"]  # type: ignore[union-attr]
    assert "a" not in rolling._actors and rolling.live_edges == 2


def test_an_edge_too_long_to_pack_is_held_whole() -> None:
    # Validation keeps identifiers to a few thousand bytes; the graph must not depend on it
    # for an actor's bytes, which give each packed edge at most 65,535.
    rolling = graph()
    huge = Report("r" * 1_000, "chirp", 1e9, "harassment", "tom", "v" * 65_000, "kent", {})
    assert rolling.apply("a", huge, now=0.0).outcome is Outcome.ACCEPTED
    actor = rolling.actor("a")
    assert actor is not None and [type(item) for item in actor.items()] == [Edge]
    assert actor.edges()[0].victim == "chirp:" + "v" * 65_000
    # Under 65,535 bytes, but past the 32,767 a packed victim's length may take: whole too.
    for account, letter in (("tom", "w"), ("ann", "x")):
        long = Report(f"r-{letter}", "chirp", 1e9, "harassment", account, letter * 40_000,
                      "kent", {})  # fmt: skip
        assert rolling.apply("a", long, now=0.0).outcome is Outcome.ACCEPTED
    actor = rolling.actor("a")
    assert actor is not None and [type(item) for item in actor.items()] == [Edge] * 3
    assert [(edge.victim, edge.accounts) for edge in actor.edges()[1:]] == [
        ("chirp:" + "w" * 40_000, {"chirp:tom"}),
        ("chirp:" + "x" * 40_000, {"chirp:ann"}),
    ]
