"""The intake journal (streams/journal.py): what several workers sharing a data dir need."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from streams.journal import IntakeJournal

OPENERS = 8
ROUNDS = 50


def _open_when_told(path: Path, go: Any, errors: Any) -> None:
    go.wait()
    try:
        IntakeJournal(path).record([("chirp", "r-1", b"{}")])
    except Exception as exc:  # what the worker would die of
        errors.put(repr(exc))


def test_workers_opening_a_new_journal_at_once_all_open_it(tmp_path: Path) -> None:
    """Two workers with one data dir start together (the bench's two workers, a host's
    reboot): the first to turn a new file to WAL found the other one mid-switch, SQLite
    answered "database is locked" at once, and that worker died at startup (seen in the
    bench; here, 40 failed opens in 200 rounds before the retry)."""
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / "intake.sqlite3"
        go = context.Event()
        openers = [context.Process(target=_open_when_told, args=(path, go, errors))
                   for _ in range(OPENERS)]  # fmt: skip
        for opener in openers:
            opener.start()
        go.set()
        for opener in openers:
            opener.join(60)
            assert opener.exitcode == 0
        assert IntakeJournal(path).known([("chirp", "r-1")]) == {("chirp", "r-1")}
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
