"""When the worker and its children hand free pages back (streams/memory.py:Trimmer), and
which allocator a worker's heap is on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_worker_preloads_jemalloc_where_the_system_has_it(tmp_path: Path) -> None:
    library = tmp_path / "libjemalloc.so.2"
    library.touch()
    found = (str(tmp_path / "elsewhere.so"), str(library))
    assert memory.system_allocator_environment({}, found) == {
        "PYTHONMALLOC": "malloc",
        "LINKWATCH_SYSTEM_ALLOCATOR": "malloc",
        "LD_PRELOAD": str(library),
        "MALLOC_CONF": memory.JEMALLOC_CONF,
    }


def test_an_operators_preload_and_jemalloc_settings_are_kept(tmp_path: Path) -> None:
    library = tmp_path / "libjemalloc.so.2"
    library.touch()
    mine = memory.system_allocator_environment({"MALLOC_CONF": "narenas:2"}, (str(library),))
    assert mine["MALLOC_CONF"] == "narenas:2"
    theirs = memory.system_allocator_environment({"LD_PRELOAD": "libtcmalloc.so"}, (str(library),))
    assert "LD_PRELOAD" not in theirs and "MALLOC_CONF" not in theirs
    assert theirs["PYTHONMALLOC"] == "malloc"


def test_without_jemalloc_the_heap_is_glibcs(tmp_path: Path) -> None:
    assert memory.system_allocator_environment({}, (str(tmp_path / "none.so"),)) == {
        "PYTHONMALLOC": "malloc",
        "LINKWATCH_SYSTEM_ALLOCATOR": "malloc",
    }


_FREED = """
import os, resource
from streams import memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
held = [str(i) * 3 for i in range(2_000_000)]
full = rss()
del held
memory.release()
print(memory.allocator(), before, full, rss())
"""


def test_a_worker_heap_runs_on_jemalloc_and_gives_freed_pages_back() -> None:
    """With the environment a worker starts again with (`make install` puts jemalloc
    there): its heap is jemalloc's, and `release` hands freed pages back at once."""
    environment = memory.system_allocator_environment(os.environ)
    assert "LD_PRELOAD" in environment, "no libjemalloc2: run `make allocator`"
    # No background thread: the pages must come back by `release`, not by time.
    environment["MALLOC_CONF"] = "background_thread:false,dirty_decay_ms:-1,muzzy_decay_ms:-1"
    result = subprocess.run(
        [sys.executable, "-c", _FREED],
        env=os.environ | environment | {"PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        check=True,
    )
    name, before, full, after = result.stdout.split()
    assert name == "jemalloc"
    grown = int(full) - int(before)
    assert grown > 100 << 20
    assert int(after) - int(before) < grown / 10
