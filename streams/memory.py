"""Returning memory to the operating system when the window slides.

CPython's own small-object allocator (pymalloc) keeps a 1 MiB arena as long as one object
in it lives, and never hands back the unused pages inside an arena. A worker's state is
millions of small objects made over months of event time, with a few long-lived ones
(alerted actors, merge forwards) scattered among them, so when the window slid past a
million edges the measured RSS stayed where it was (streams/scaling.py: 170 MB before,
157 MB after, empty 19 MB). With the C library's allocator instead (`PYTHONMALLOC=malloc`)
and `malloc_trim` after a large expiry, free pages go back at page granularity: 29 MB
after, for the same run, at the same speed. So the worker runs that way.

The resolver process splits its heap instead (`split_heap`, `transient`): its state on the
C library's allocator, and the short-lived objects of each batch (the decoded rows, the
encoded packs) on pymalloc, which allocates them in about half the time. pymalloc's own
`free` hands any address outside its arenas to the C library's, so either kind of object
can be freed in either mode.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "FREEZE_EVERY",
    "Trimmer",
    "exec_again",
    "freeze",
    "release",
    "split_heap",
    "split_heap_environment",
    "stateless_allocator",
    "transient",
    "tune_collector",
    "use_system_allocator",
]

# How often (seconds) the worker moves the objects that survived so far out of the cyclic
# garbage collector's sight (see `freeze`).
FREEZE_EVERY = 10.0

_trim: Any
try:
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: nothing to trim with
    _trim = None


# Set beside PYTHONMALLOC by `use_system_allocator`: the allocator is linkwatch's choice,
# not an operator's, and a process that keeps no state may use Python's own.
_CHOSEN = "LINKWATCH_SYSTEM_ALLOCATOR"


def use_system_allocator() -> None:
    """Restart this command with `PYTHONMALLOC=malloc` unless it already has a setting
    (an operator's explicit PYTHONMALLOC wins). Only the worker commands call it."""
    if "PYTHONMALLOC" in os.environ or _trim is None:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    os.environ[_CHOSEN] = "malloc"
    exec_again()


def stateless_allocator() -> dict[str, str]:
    """The environment for a child process that keeps no state (intake's): Python's own
    allocator, unless an operator chose one. The C library's allocator is for state that
    expiry frees; for a batch's short-lived objects pymalloc is faster (measured:
    validation 21.5 against 26.1 us a report). It keeps an arena while one object in it
    lives, so such a process is renewed when idle (streams/offload.py)."""
    return {"PYTHONMALLOC": "pymalloc"} if _linkwatch_chose_malloc() else {}


def _linkwatch_chose_malloc() -> bool:
    """Whether this process is on the C library's allocator by `use_system_allocator`'s
    choice rather than an operator's."""
    return os.environ.get(_CHOSEN) == os.environ.get("PYTHONMALLOC") == "malloc"


# Set for a child whose heap is split (`split_heap_environment`).
_SPLIT = "LINKWATCH_SPLIT_HEAP"


def split_heap_environment() -> dict[str, str]:
    """The environment for a child process that keeps state (the resolver's): started on
    Python's own allocator so that `split_heap` can put its state on the C library's.
    Nothing when an operator chose the allocator: theirs is used whole."""
    return {"PYTHONMALLOC": "pymalloc", _SPLIT: "1"} if _linkwatch_chose_malloc() else {}


class _Allocator(ctypes.Structure):
    """CPython's PyMemAllocatorEx: a context and four functions taking it."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("ctx", "malloc", "calloc", "realloc", "free")]


class _SplitHeap:
    """Two allocators for CPython's object and memory domains, switched by `transient`.

    - state (the default): new blocks from the C library's allocator, as in the worker, so
      that expiry returns memory (`release`);
    - batch: pymalloc, for objects that die with the batch.

    Both free with pymalloc's `free` and resize with its `realloc`, which pass any block
    outside pymalloc's arenas to the C library's (CPython 3.11, Objects/obmalloc.c:
    `_PyObject_Free`, `_PyObject_Realloc`), so a block made in one mode can be freed or
    resized in the other. This relies on pymalloc's functions ignoring their context, as
    they do without debug hooks (`split_heap` checks that the contexts are NULL).

    One kind of block escapes: pymalloc's `realloc` of nothing allocates from pymalloc, so
    the first items of a list that was empty land there in either mode (until it outgrows
    512 bytes). They are a twentieth of the resolver's state
    (`test_a_split_heap_keeps_state_off_pymalloc_and_gives_the_same_records`) and leave
    with it; after the window slid past 200,000 reports the resolver process held what it
    held on the C library's allocator alone (43 MB; README, "Performance", change 22)."""

    RAW, MEM, OBJ = 0, 1, 2  # PyMemAllocatorDomain

    def __init__(self) -> None:
        api = ctypes.pythonapi
        for function in (api.PyMem_GetAllocator, api.PyMem_SetAllocator):
            function.argtypes, function.restype = [ctypes.c_int, ctypes.c_void_p], None
        raw, pymalloc = _Allocator(), _Allocator()
        api.PyMem_GetAllocator(self.RAW, ctypes.byref(raw))
        api.PyMem_GetAllocator(self.OBJ, ctypes.byref(pymalloc))
        if raw.ctx or pymalloc.ctx:
            raise RuntimeError("the allocators have debug hooks")
        self._set = api.PyMem_SetAllocator
        self._batch = _Allocator(None, pymalloc.malloc, pymalloc.calloc, pymalloc.realloc,
                                 pymalloc.free)  # fmt: skip
        self._state = _Allocator(None, raw.malloc, raw.calloc, pymalloc.realloc, pymalloc.free)

    def state(self) -> None:
        self._set(self.MEM, ctypes.byref(self._state))
        self._set(self.OBJ, ctypes.byref(self._state))

    def batch(self) -> None:
        self._set(self.MEM, ctypes.byref(self._batch))
        self._set(self.OBJ, ctypes.byref(self._batch))


_split: _SplitHeap | None = None


def split_heap() -> bool:
    """In a child started with `split_heap_environment`: new objects from here on are made
    by the C library's allocator, except inside `transient`. Returns whether the heap is
    split; anything else (another environment, debug hooks, another Python) leaves the
    process on the allocator it started with."""
    global _split
    if _split is not None:
        return True
    if (
        os.environ.get(_SPLIT) != "1"
        or os.environ.get("PYTHONMALLOC") != "pymalloc"
        or sys.flags.dev_mode
        or sys.implementation.name != "cpython"
        or sys.version_info[:2] != (3, 11)
        or _trim is None
    ):
        return False
    try:
        heap = _SplitHeap()
    except (AttributeError, RuntimeError):
        return False
    heap.state()
    _split = heap
    return True


@contextmanager
def transient() -> Iterator[None]:
    """Objects made inside are a batch's, gone when it is answered: made by pymalloc where
    the heap is split (`split_heap`), a no-op elsewhere. Nothing made inside may be kept by
    state: an object that outlived the batch would hold pymalloc's 1 MiB arena after expiry."""
    heap = _split
    if heap is None:
        yield
        return
    heap.batch()
    try:
        yield
    finally:
        heap.state()


def exec_again() -> None:
    """Replace this process with the same `linkwatch` command: same pid, arguments, log.
    Its child processes (streams/offload.py) would outlive an exec: they go first."""
    for child in multiprocessing.active_children():
        child.kill()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "streams.cli", *sys.argv[1:]])


def release() -> None:
    """Give free heap pages back to the operating system (glibc only; else a no-op).

    CPython's free lists go first. It keeps freed objects of a few types for reuse instead
    of freeing them: up to 2,000 tuples of each length from 1 to 19, and some floats,
    lists, dicts and contexts. Each stays where it was made, so once expiry had freed the
    state around them, each held a page on its own: about 9,000 tuples held 28 MB of the
    worker after the bench's slide, more than any state it keeps (session 17). Only a full
    collection empties them. What has survived so far is frozen first (`freeze`, as the
    worker and the resolver process do every FREEZE_EVERY seconds anyway), so the
    collection walks nothing and costs nothing; cyclic garbage pending then is frozen with
    the rest, as at every freeze (there is little: see `freeze`).

    CPython's type attribute cache goes too: it keeps a reference to the name of each of
    its last 4,096 attribute lookups, and a name made afresh for a lookup then stays where
    it was made. Emptied (it refills at once), the state process kept 22.4-23.0 MB after
    the window slid past 300,000 edges where it kept 27.2-27.8, 21.1 empty (session 22)."""
    if _trim is not None:
        freeze()
        gc.collect()
        sys._clear_type_cache()
        _trim(0)


class Trimmer:
    """When a state's expiry has freed enough for `release` to be worth its walk of the heap
    (measured: 26-115 ms on a fragmented 450 MB heap, on the caller's thread): once what
    it holds has halved since the last release, and when a trailing expiry catches up
    holding under three quarters of the most it held since it last caught up (its last
    step copies the shrunken tables, which frees the old ones, even when the count had
    already reached its low). A steady stream, whose expiry catches up every few seconds
    having freed little, never pays for it."""

    def __init__(self) -> None:
        self._held_at_release = 0  # the most held since the last release
        self._held_at_catch_up = 0  # the most held since expiry last caught up
        self._behind = False

    def held(self, count: int, behind: bool | None = None) -> None:
        """The state holds `count` items now; `behind`: whether its expiry still trails
        (None: not known at this call)."""
        caught_up = False
        if behind is not None:
            caught_up, self._behind = self._behind and not behind, behind
        self._held_at_release = max(self._held_at_release, count)
        self._held_at_catch_up = max(self._held_at_catch_up, count)
        if count * 2 < self._held_at_release or (
            caught_up and count * 4 < self._held_at_catch_up * 3
        ):
            release()
            self._held_at_release = count
        if caught_up:
            self._held_at_catch_up = count


# Allocations between young collections, young collections per middle one, middle ones
# per full one (CPython's defaults: 700, 10, 10).
COLLECTOR_THRESHOLDS = (50_000, 20, 100)


def tune_collector() -> None:
    """Collect less often, in larger steps.

    A worker allocates a few containers per report (decoded rows, records, edges), and
    most of them live on in the graph. With CPython's default thresholds the collector ran
    a young collection every 700 allocations and a full one about once a second, and each
    full one walked everything that survived since the last `freeze`: measured 3.3 s of
    collection in 15 s of a worker under load (2,500 young, 226 middle, 14 full). With
    these thresholds: 0.5 s in 13 young collections of 40 ms each, none full in that time,
    and the worker's rate rose by a fifth (README, "Performance"). Cyclic garbage is still
    collected: the young collections find it, and a full collection still runs, rarely."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def freeze() -> None:
    """Move every object the cyclic collector tracks into its permanent generation.

    The graph is millions of long-lived objects, and a full collection walks them all:
    measured 450 ms at 500,000 edges (1.26M objects), ten times per 500,000 reports, so it
    was the worker's p99 latency and a few percent of its time. Frozen objects are still
    freed the usual way when their last reference goes (the graph has no reference
    cycles), so expiry still returns them. Garbage in reference cycles that is pending at
    a freeze is never collected, though: the graph and the rule make none
    (`test_applying_reports_leaves_nothing_for_the_cycle_collector`; a recursive closure
    in the rule made one per evaluation until change 18), and what the rest of the worker
    leaves is about 2,500 objects over a run, mostly from its start (Kafka clients that
    read a topic once, the topic creation)."""
    gc.freeze()
