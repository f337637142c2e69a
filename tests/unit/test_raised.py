"""What each actor has raised survives folding into the compact arrays (graph/raised.py)."""

from __future__ import annotations

import random

from graph.raised import RaisedAlerts


def test_levels_and_brigades_read_back_the_same_before_and_after_each_fold() -> None:
    rng = random.Random(7)
    raised = RaisedAlerts()
    model: dict[str, tuple[int, bool]] = {}
    actors = [f"act_{n:05d}" for n in range(3_000)]
    for step in range(20_000):
        actor = rng.choice(actors)
        level, brigade = model.get(actor, (0, False))
        if rng.random() < 0.2:
            raised.raise_brigade(actor)
            model[actor] = (level, True)
        else:
            new_level = level + rng.randint(1, 3)
            raised.raise_serial(actor, new_level)
            model[actor] = (new_level, brigade)
        if step % 500 == 0:
            raised.fold()
    raised.fold()
    for actor in [*actors, "never-seen", ""]:
        level, brigade = model.get(actor, (0, False))
        assert (raised.serial_level(actor), raised.brigade_raised(actor)) == (level, brigade)
    keys = raised._keys.tolist()
    assert keys == sorted(set(keys))  # one entry an actor: a fold supersedes the old one


def test_a_fold_waits_until_it_is_worth_rewriting_the_arrays() -> None:
    raised = RaisedAlerts()
    for n in range(63):
        raised.raise_serial(f"act_{n}", 3)
    raised.fold()
    assert raised._keys.tolist() == []  # under 64 entries: they stay in the dict
    raised.raise_serial("act_63", 4)
    raised.fold()
    assert len(raised._keys) == 64 and not raised._recent
    assert raised.serial_level("act_63") == 4 and raised.serial_level("act_0") == 3
