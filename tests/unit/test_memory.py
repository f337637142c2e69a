"""When the worker and its children hand free pages back (streams/memory.py:Trimmer), and the
resolver process's split heap (memory.split_heap)."""

from __future__ import annotations

import os
import subprocess
import sys

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


# A resolver process's work on a split heap and on a whole one, in a fresh interpreter. It
# prints the packs' digest, then pymalloc's statistics (sys._debugmallocstats, on stderr)
# before and after the state was built, and while a batch was decoded.
_RESOLVER = """
import hashlib, sys
from datetime import timedelta
import orjson
from streams import memory
split = memory.split_heap()
from agents.children import Resolvers, validate_batch
from streams.settings import Settings
from tests.factories import encode, make_report

settings = Settings(pseudonym_key="split-heap-test-key-0123456", partitions=4)
values = [encode(make_report(f"acct-{i // 2}", f"victim-{i}", at=timedelta(seconds=i),
                             signals={"device_id": f"dev-{i // 6}"}))
          for i in range(12_000)]
messages = []
for start in range(0, len(values), 500):
    chunk = values[start:start + 500]
    messages += validate_batch(chunk, [0] * len(chunk), list(range(start, start + len(chunk))),
                               settings.pseudonyms())[0]
del values, chunk

def pymalloc(label):
    with memory.transient():
        print(label, file=sys.stderr, flush=True)
        sys._debugmallocstats()

resolvers = Resolvers(settings)
resolvers.create(0, 1)
digest = hashlib.sha256()
pymalloc("@start")
for message in messages:
    for partition, pack in resolvers.apply(0, 1, message, False).packs:
        digest.update(b"%d:%s" % (partition, pack))
pymalloc("@state")
with memory.transient():
    rows = [orjson.loads(message) for message in messages[:4]]
    pymalloc("@batch")
print(split, resolvers._states[0].resolver.accounts, digest.hexdigest())
"""


def _pymalloc_bytes(stderr: str, label: str) -> int:
    """Bytes in pymalloc's allocated blocks at `label` in `_RESOLVER`'s stderr."""
    section = stderr.split(label, 1)[1]
    line = next(line for line in section.splitlines() if "bytes in allocated blocks" in line)
    return int(line.split("=")[1].replace(",", ""))


def _python(script: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`script` in a fresh interpreter whose allocator settings are `environment`'s only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "PYTHONDEVMODE")}
    return subprocess.run([sys.executable, "-c", script], env=env | environment,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip


def _run_resolver(environment: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    done = _python(_RESOLVER, environment)
    labels = ("@start", "@state", "@batch")
    return done.stdout.split(), {label: _pymalloc_bytes(done.stderr, label) for label in labels}


def test_a_split_heap_keeps_state_off_pymalloc_and_gives_the_same_records() -> None:
    """A resolver process on a split heap (memory.split_heap): the state it builds is
    made by the C library's allocator, so expiry can hand its pages back, while the batch
    it decodes is made by pymalloc; the records are those of a whole heap."""
    split, split_bytes = _run_resolver({"PYTHONMALLOC": "pymalloc", "LINKWATCH_SPLIT_HEAP": "1"})
    whole, whole_bytes = _run_resolver({"PYTHONMALLOC": "pymalloc"})
    assert split[0] == "True" and whole[0] == "False"
    assert split[1:] == whole[1:]  # accounts held, and the digest of every pack
    assert int(split[1]) == 6_000
    state_on_pymalloc = whole_bytes["@state"] - whole_bytes["@start"]
    assert state_on_pymalloc > 1_000_000  # the state, on a whole heap
    # What is left on pymalloc: the first items of lists that were empty (memory._SplitHeap),
    # measured 1/18 of the state here and 1/26 with four times the reports.
    assert split_bytes["@state"] - split_bytes["@start"] < state_on_pymalloc / 10
    assert split_bytes["@batch"] - split_bytes["@state"] > 500_000  # the decoded batch


@pytest.mark.parametrize(
    "environment",
    [
        {"PYTHONMALLOC": "pymalloc"},  # not asked for
        {"PYTHONMALLOC": "malloc", "LINKWATCH_SPLIT_HEAP": "1"},  # no pymalloc to split
        {"PYTHONMALLOC": "pymalloc_debug", "LINKWATCH_SPLIT_HEAP": "1"},  # debug hooks
        {"PYTHONMALLOC": "pymalloc", "LINKWATCH_SPLIT_HEAP": "1", "PYTHONDEVMODE": "1"},
    ],
)
def test_a_heap_is_split_only_when_asked_and_possible(environment: dict[str, str]) -> None:
    script = "from streams import memory\nwith memory.transient(): pass\nprint(memory.split_heap())"
    assert _python(script, environment).stdout.strip() == "False"


_FREE_LISTS = """
import gc
from streams import memory

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

gc.disable()  # a full collection would empty the free lists by itself
memory.release()  # the tuple free list starts empty
tuples, pages = [], []
for _ in range(20_000):  # a one-tuple, then a page's worth of something else
    tuples.append(tuple([None]))
    pages.append(bytes(4000))
for number in range(0, 20_000, 10):  # 2,000 tuples, ten pages apart, freed first:
    tuples[number] = None  # they fill the free list of one-tuples
del tuples, pages  # everything else is freed
memory._trim(0)
kept = rss()
memory.release()
print(kept, rss())
"""


def test_release_empties_pythons_free_lists_whose_objects_each_hold_a_page() -> None:
    """CPython keeps up to 2,000 freed tuples of each length for reuse, each where it was
    made. After expiry they held a page each: 28 MB of the worker after the bench's slide,
    which `malloc_trim` alone could not give back (session 17)."""
    kept, released = map(int, _python(_FREE_LISTS, {"PYTHONMALLOC": "malloc"}).stdout.split())
    assert kept - released > 2_000 * 4096 / 2
