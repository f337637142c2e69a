"""The intake journal: reports this worker accepted over HTTP, kept on local disk.

It answers "did I accept this (platform, report_id) already?" for the intake API, and it
keeps the accepted bytes so that they can be sent to Kafka again after a broker loses them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["IntakeJournal"]


# How long opening the journal waits for other workers sharing it, in seconds.
OPEN_PATIENCE = 30.0


class IntakeJournal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _open(path)

    def known(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (platform, report_id) pairs were accepted before."""
        found: set[tuple[str, str]] = set()
        for platform, report_id in keys:
            row = self._db.execute(
                "SELECT 1 FROM accepted WHERE platform = ? AND report_id = ?",
                (platform, report_id),
            ).fetchone()
            if row is not None:
                found.add((platform, report_id))
        return found

    def record(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Remember accepted reports, durably, in one transaction."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO accepted VALUES (?, ?, ?, ?)",
                [(platform, report_id, now, body) for platform, report_id, body in rows],
            )

    def bodies(self, since: float | None = None) -> Iterator[bytes]:
        """The accepted bytes, in the order they were accepted; with `since` (seconds since
        the epoch), only those accepted then or later. Read lazily, for big journals."""
        # rowid is the insertion order, even if the wall clock stepped back in between.
        if since is None:
            cursor = self._db.execute("SELECT body FROM accepted ORDER BY rowid")
        else:
            cursor = self._db.execute(
                "SELECT body FROM accepted WHERE accepted_at >= ? ORDER BY rowid", (since,)
            )
        for (body,) in cursor:
            yield bytes(body)

    def prune(self, older_than: float) -> int:
        """Forget what was accepted before `older_than` (seconds since the epoch)."""
        with self._db:
            cursor = self._db.execute("DELETE FROM accepted WHERE accepted_at < ?", (older_than,))
        return int(cursor.rowcount)

    def close(self) -> None:
        self._db.close()


def _open(path: Path) -> sqlite3.Connection:
    """The journal's connection, in WAL mode, its table made.

    Workers sharing a data dir share the journal, and they often start together. Turning a
    new file to WAL takes every lock, and when two connections both hold a shared lock and
    both want that, SQLite answers one of them "database is locked" at once instead of
    waiting (waiting would deadlock), so its worker died at startup (seen in the bench's
    two workers; `tests/unit/test_journal.py`). That answer is retried from a new
    connection until `OPEN_PATIENCE`. A lock held by a write is waited for by SQLite itself,
    for its default 5 s: the API writes on the event loop, so no longer than before."""
    deadline = time.monotonic() + OPEN_PATIENCE
    while True:
        db = sqlite3.connect(path, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS accepted ("
                " platform TEXT NOT NULL, report_id TEXT NOT NULL, accepted_at REAL NOT NULL,"
                " body BLOB NOT NULL, PRIMARY KEY (platform, report_id))"
            )
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)
