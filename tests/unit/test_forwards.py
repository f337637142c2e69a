"""Where merged-away actors live survives folding into the compact block (graph/forwards.py)."""

from __future__ import annotations

import random
from datetime import timedelta

from graph.forwards import Forwards
from graph.rules import CrossRegionRule
from graph.window import RollingGraph
from tests.unit.test_merges import DAY, report


def test_forwards_read_back_the_same_before_and_after_each_fold() -> None:
    rng = random.Random(11)
    forwards = Forwards()
    model: dict[str, str] = {}
    actors = [f"act_{n:05d}" for n in range(3_000)] + ["act_é_ünicode", "x"]
    for step in range(20_000):
        absorbed, into = rng.choice(actors), rng.choice(actors)
        forwards.set(absorbed, into)  # a later forward of the same actor replaces one
        model[absorbed] = into
        if step % 700 == 0:
            forwards.fold()
            assert all(forwards.get(actor) == model.get(actor) for actor in actors[::37])
    forwards.fold()
    for actor in [*actors, "never-merged", ""]:
        assert forwards.get(actor) == model.get(actor)
    hashes = forwards._hashes.tolist()
    assert hashes == sorted(hashes) and len(hashes) == len(model)  # one forward an actor


def test_a_fold_waits_until_it_is_worth_rewriting_the_block() -> None:
    forwards = Forwards()
    for n in range(63):
        forwards.set(f"act_{n}", "act_x")
    forwards.fold()
    assert not forwards._hashes and not forwards._ids  # under 64: they stay in the dict
    forwards.set("act_63", "act_y")
    forwards.fold()
    assert len(forwards._hashes) == 64 and not forwards._recent
    assert forwards.get("act_63") == "act_y" and forwards.get("act_0") == "act_x"


def test_a_graph_passes_absorbs_on_after_the_window_slid_past_the_merged_actors() -> None:
    # An absorb for an actor merged away long ago still finds where it lives (records.py
    # passes it on), after expiry has caught up and folded the forwards.
    rolling = RollingGraph(30 * DAY, CrossRegionRule(3))
    for n in range(100):
        rolling.apply(f"Y{n}", report(f"b{n}", f"v{n}", "kent"), now=0)
        rolling.detach(f"Y{n}", into=f"X{n % 7}")
    rolling.apply("Z", report("z", "vz", "kent", at=timedelta(days=365)), now=0)
    while rolling.expire_some(100):
        pass
    assert not rolling._forward._recent  # folded when expiry caught up
    assert [rolling.forwarded_to(f"Y{n}") for n in range(100)] == [f"X{n % 7}" for n in range(100)]
    assert rolling.forwarded_to("X1") is None and rolling.forwarded_to("Z") is None
