"""When the worker and its children hand free pages back (streams/memory.py:Trimmer)."""

from __future__ import annotations

import pytest

from streams import memory


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(memory, "release", lambda: calls.append(1))
    return calls


def test_pages_go_back_once_what_is_held_has_halved(releases: list[int]) -> None:
    trimmer = memory.Trimmer()
    for count in (1_000, 4_000, 2_500, 2_001):
        trimmer.held(count)
    assert releases == []  # it grew, then fell by less than half
    trimmer.held(1_999)
    assert releases == [1]
    trimmer.held(1_500)
    assert releases == [1]  # measured from the last release now
    trimmer.held(999)
    assert releases == [1, 1]


def test_pages_go_back_when_a_trailing_expiry_catches_up(releases: list[int]) -> None:
    trimmer = memory.Trimmer()
    trimmer.held(10_000, behind=False)
    trimmer.held(9_000, behind=True)
    trimmer.held(8_000)  # a batch between slices: not known whether still behind
    trimmer.held(7_000, behind=True)
    assert releases == []
    trimmer.held(6_000, behind=False)  # caught up, with more than half still held
    assert releases == [1]
    trimmer.held(6_000, behind=False)
    assert releases == [1]  # only on the step that caught up


def test_a_catch_up_that_freed_little_leaves_the_heap_alone(releases: list[int]) -> None:
    """A steady stream's expiry falls behind and catches up all the time, freeing a few
    edges each time; a release walks the whole heap (tens of ms)."""
    trimmer = memory.Trimmer()
    for count in range(10_000, 12_000, 100):
        trimmer.held(count, behind=True)
        trimmer.held(count - 50, behind=False)
    assert releases == []


def test_a_catch_up_after_halving_releases_what_the_last_step_freed(releases: list[int]) -> None:
    """A slide past everything: the count halves (a release) and reaches its low while
    expiry is still behind (the resolver's signal values retire after its accounts); the
    step that catches up then copies the shrunken tables, freeing the old ones, and that
    must be handed back too, though the count did not move since the last release."""
    trimmer = memory.Trimmer()
    trimmer.held(100_000, behind=False)
    trimmer.held(40_000, behind=True)
    assert releases == [1]  # halved
    trimmer.held(64, behind=True)
    assert releases == [1, 1]  # halved again
    trimmer.held(64, behind=True)
    trimmer.held(64, behind=False)  # caught up: the tables were copied down
    assert releases == [1, 1, 1]
    trimmer.held(64, behind=True)
    trimmer.held(64, behind=False)  # a later catch-up that freed nothing
    assert releases == [1, 1, 1]
