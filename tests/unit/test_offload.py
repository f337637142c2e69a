"""Intake in child processes: the same results as in the worker, and nothing lost if one dies."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import orjson
import pytest

from agents.intake import Intake, validate_fetched, validated
from graph.identity import Pseudonyms
from streams import offload as offload_module
from streams.fetched import RawFetch
from streams.metrics import Metrics
from streams.offload import TIMEOUT, TRIM_AFTER_BYTES, TRIM_IDLE, Offload
from streams.settings import Settings
from tests.factories import encode, fetch, make_report

SETTINGS = Settings(pseudonym_key="offload-test-key-0123456789")


@dataclass
class _Record:
    value: bytes | None
    partition: int
    offset: int


@dataclass
class _Batch:
    fetches: list[RawFetch]  # what intake is handed: one fetch per partition
    records: list[_Record]  # their records, in the fetches' order


def _batch(size: int) -> _Batch:
    """Valid reports with malformed ones among them, over four partitions."""
    records = []
    for i in range(size):
        if i % 7 == 3:
            value: bytes | None = b'{"report_id": "broken"'
        elif i % 11 == 5:
            value = encode(make_report(f"acct-{i}", f"victim-{i}", category="spam"))
        else:
            value = encode(
                make_report(f"acct-{i % 40}", f"victim-{i}", at=timedelta(minutes=i),
                            signals={"email_hash": f"e{i % 9}"})
            )  # fmt: skip
        records.append(_Record(value, i % 4, 1_000 + i // 4))
    records.sort(key=lambda record: record.partition)  # stable: offsets stay in order
    fetches = [
        fetch(partition, 1_000, [r.value for r in records if r.partition == partition])
        for partition in range(4)
    ]
    return _Batch(fetches, records)


@pytest.fixture
def offloads() -> Iterator[list[Offload[Pseudonyms, Intake]]]:
    made: list[Offload[Pseudonyms, Intake]] = []
    yield made
    for offload in made:
        offload.close()


def _offload(made: list[Offload[Pseudonyms, Intake]], count: int) -> Offload[Pseudonyms, Intake]:
    made.append(Offload(count, validate_fetched, SETTINGS.pseudonyms, Metrics()))
    return made[-1]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_child_processes_give_what_the_worker_itself_gives(
    offloads: list[Offload[Pseudonyms, Intake]], count: int
) -> None:
    batch = _batch(1_234)
    records = batch.records
    here = asyncio.run(validated(_offload(offloads, 0), batch.fetches))
    there = asyncio.run(validated(_offload(offloads, count), batch.fetches))
    # Each piece is packed on its own, so compare the rows, not where the packs split.
    assert _rows(there) == _rows(here) and there[1] == here[1]
    rows, rejected = _rows(here), here[1]
    assert len(rows) + len(rejected) == len(records)  # every record: forwarded or rejected
    assert {rejection[4] for rejection in rejected} == {"not_json", "unknown_category"}
    # A rejection carries where its report came from and its original bytes.
    refused = {(partition, offset) for partition, offset, *_ in rejected}
    assert [
        (r.partition, r.offset, None, r.value)
        for r in records
        if (r.partition, r.offset) in refused
    ] == [rejection[:4] for rejection in rejected]
    # Order is kept: the rows follow the records, each ending with its input partition and
    # its offset there.
    valid = [r for r in records if (r.partition, r.offset) not in refused]
    assert [row[0] for row in rows] == [orjson.loads(r.value or b"")["report_id"] for r in valid]
    assert [row[-2:] for row in rows] == [[r.partition, r.offset] for r in valid]


def _rows(result: Intake) -> list[list[object]]:
    return [row for message in result[0] for row in orjson.loads(message)]


def test_a_child_that_dies_costs_no_batch(offloads: list[Offload[Pseudonyms, Intake]]) -> None:
    offload = _offload(offloads, 1)
    records = _batch(300).fetches
    expected = asyncio.run(validated(_offload(offloads, 0), records))
    assert asyncio.run(validated(offload, records)) == expected  # the child is up
    (first,) = offload.pids
    os.kill(first, signal.SIGKILL)
    errors_before = offload.metrics.internal_errors._value.get()
    # Done in the worker instead:
    assert asyncio.run(validated(offload, records)) == expected
    assert offload.metrics.internal_errors._value.get() == errors_before + 1
    (second,) = offload.pids
    assert second != first
    assert asyncio.run(validated(offload, records)) == expected  # by the new child
    assert offload.metrics.internal_errors._value.get() == errors_before + 1


def test_a_child_that_does_not_answer_is_replaced(
    offloads: list[Offload[Pseudonyms, Intake]],
) -> None:
    offload = _offload(offloads, 1)
    records = _batch(300).fetches
    expected = asyncio.run(validated(_offload(offloads, 0), records))
    assert asyncio.run(validated(offload, records)) == expected  # the child is up
    offload.timeout = 1.0  # not before: a spawned child takes about a second to start
    (stopped,) = offload.pids
    os.kill(stopped, signal.SIGSTOP)  # alive, but answers nothing
    assert asyncio.run(validated(offload, records)) == expected  # in the worker
    assert offload.metrics.internal_errors._value.get() == 1
    (replacement,) = offload.pids
    assert replacement != stopped
    offload.timeout = TIMEOUT  # the replacement starts up too
    assert asyncio.run(validated(offload, records)) == expected
    assert offload.metrics.internal_errors._value.get() == 1  # it answered


class _Resting:
    """A child's context that leaves a file behind when the child rests (its `idle()`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def idle(self) -> None:
        with open(self.path, "a") as marks:
            marks.write("rested\n")


def _size(piece: bytes, context: _Resting) -> int:
    return len(piece)


def test_a_child_rests_after_a_burst_of_work_and_not_before(tmp_path: Path) -> None:
    """After TRIM_AFTER_BYTES of requests and TRIM_IDLE seconds without one, a child drops
    its context's caches (`idle()`) and hands its free pages back; once per burst."""
    marks = tmp_path / "rests"
    offload = Offload(1, _size, partial(_Resting, str(marks)), Metrics())
    piece = b"x" * (1 << 20)

    async def burst(pieces: int) -> None:
        for _ in range(pieces):
            assert await offload.map([(piece,)]) == [len(piece)]

    try:
        asyncio.run(burst(TRIM_AFTER_BYTES // len(piece) - 1))
        time.sleep(TRIM_IDLE * 4)
        assert not marks.exists()  # under the threshold: nothing to give back yet
        asyncio.run(burst(2))
        deadline = time.monotonic() + 10
        while not marks.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(TRIM_IDLE * 4)
        assert marks.read_text() == "rested\n"  # once, not at every idle pause
    finally:
        offload.close()


class _Request:
    """A request's object; the child can tell whether it still holds it (a weak reference)."""

    def __init__(self, size: int) -> None:
        self.data = b"x" * size


class _Watching(_Resting):
    """Marks, when the child rests, whether the last request's object is still alive."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.last: Callable[[], _Request | None] = lambda: None

    def idle(self) -> None:
        with open(self.path, "a") as marks:
            marks.write("held\n" if self.last() is not None else "let go\n")


def _watch(request: _Request, context: _Watching) -> int:
    context.last = weakref.ref(request)
    return len(request.data)


def test_a_resting_child_holds_nothing_of_the_last_request(tmp_path: Path) -> None:
    """A batch's objects are spread through the heap: a child that kept the last one while
    it waited would pin their pages when it hands free pages back (measured: an intake
    process kept 63-70 MB after a 200,000-report burst, and 40 MB once the last batch went)."""
    marks = tmp_path / "rests"
    offload = Offload(1, _watch, partial(_Watching, str(marks)), Metrics())

    async def burst() -> None:
        for _ in range(TRIM_AFTER_BYTES // (1 << 20) + 1):
            assert await offload.map([(_Request(1 << 20),)]) == [1 << 20]

    try:
        asyncio.run(burst())
        deadline = time.monotonic() + 10
        while not marks.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marks.read_text() == "let go\n"
    finally:
        offload.close()


def _allocator(context: object) -> str | None:
    """The allocator a child was started with."""
    return os.environ.get("PYTHONMALLOC")


def test_an_intake_process_uses_pythons_allocator_unless_an_operator_chose_one(
    allocator_chosen_by: str,
) -> None:
    """The worker runs on the C library's allocator so that expiry returns memory
    (streams/memory.py); an intake process keeps no state, and Python's own allocator
    validates a report faster."""
    expected = "pymalloc" if allocator_chosen_by == "linkwatch" else "malloc"
    offload = Offload(1, _allocator, dict, Metrics())
    try:
        assert asyncio.run(offload.map([()])) == [expected]
        assert os.environ["PYTHONMALLOC"] == "malloc"  # the worker's own is unchanged
    finally:
        offload.close()


def _policy(context: object) -> int:
    """The scheduling policy a child runs under."""
    return os.sched_getscheduler(0)


def test_an_intake_process_leaves_a_busy_core_to_the_workers_loop() -> None:
    """An intake process runs as a batch task: woken by a batch, it does not preempt the
    worker's event loop (streams/offload.py, `_yield_to_the_loop`)."""
    offload = Offload(1, _policy, dict, Metrics())
    try:
        assert asyncio.run(offload.map([()])) == [os.SCHED_BATCH]
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the worker's own is unchanged
    finally:
        offload.close()


def test_an_intake_process_is_renewed_once_it_is_idle_after_a_burst(
    offloads: list[Offload[Pseudonyms, Intake]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's allocator keeps an arena while one object in it lives, so an intake process
    that has had a burst is replaced once idle. It holds no state: the fresh one gives the
    same answers, and nothing counts as an error."""
    monkeypatch.setattr(offload_module, "RENEW_AFTER_BYTES", 1)
    monkeypatch.setattr(offload_module, "RENEW_IDLE", 0.2)
    offload = _offload(offloads, 1)
    records = _batch(300).fetches
    expected = asyncio.run(validated(_offload(offloads, 0), records))

    async def burst_then_idle() -> tuple[int, int]:
        assert await validated(offload, records) == expected
        (before,) = offload.pids
        renewing = asyncio.ensure_future(offload.renew_when_idle(every=0.05))
        try:
            deadline = time.monotonic() + 30
            while offload.pids == [before] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await validated(offload, records) == expected  # by the fresh one
            while _running(before) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            renewing.cancel()
        (after,) = offload.pids
        return before, after

    before, after = asyncio.run(burst_then_idle())
    assert after != before
    assert not _running(before)  # the old one is gone
    assert offload.metrics.internal_errors._value.get() == 0


def _answer_of(size: int, context: object) -> bytes:
    return b"x" * size


def test_an_answer_waits_whole_while_the_workers_loop_is_busy() -> None:
    """The worker's loop may be busy with another agent when a child answers. The answer (a
    batch's rows: a few hundred KB) must then wait in the socket whole, so that the loop
    reads it at its next turn, rather than the child stopping part way and the loop taking
    the rest a turn later (`SOCKET_BUFFER`). The kernel grants twice what is asked, up to
    twice net.core.wmem_max; without the setting a writer stops at about 210 KB (the
    default) whatever the cap, so an answer of 1.5 times the cap tells the two apart
    on any host."""
    cap = int(Path("/proc/sys/net/core/wmem_max").read_text())
    size = min(offload_module.SOCKET_BUFFER, cap) * 3 // 2
    offload = Offload(1, _answer_of, dict, Metrics())
    (child,) = offload._children

    async def answer_while_busy() -> tuple[int, list[bytes]]:
        call = asyncio.ensure_future(offload.map([(size,)]))
        for _ in range(10):  # the request goes out; the call then waits for the answer
            await asyncio.sleep(0)
        queued, deadline = 0, time.monotonic() + 10
        while queued < size and time.monotonic() < deadline:
            time.sleep(0.05)  # the loop is busy: nothing reads the socket meanwhile
            raw = fcntl.ioctl(child.socket, termios.FIONREAD, b"\0" * 4)
            queued = struct.unpack("i", raw)[0]
        return queued, await call

    try:
        queued, answers = asyncio.run(answer_while_busy())
    finally:
        offload.close()
    assert queued >= size
    assert answers == [b"x" * size]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
