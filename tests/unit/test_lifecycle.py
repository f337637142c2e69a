"""The alert book: what the queue API shows of each alert, and what holding one costs."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from graph.lifecycle import AlertBook, LifecycleError, UnknownAlert


def _alert(number: int, level: int = 3, kind: str = "serial", victims: int = 3) -> dict[str, Any]:
    return {
        "alert_id": f"alert-{number}",
        "kind": kind,
        "actor_id": f"act_{number:020d}",
        "level": level,
        "regions": ["east", "north", "south"][:level],
        "victim_count": victims,
        "victims_by_region": {"east": 1, "north": 1, "south": victims - 2},
        "accounts": [f"chirp:someone.{number}", f"pixgram:someone.{number}"],
        "platforms": ["chirp", "pixgram"],
        "categories": ["harassment"],
        "report_ids": [f"chirp:r-{number}-{i}" for i in range(victims)],
        "first_seen": 1_790_000_000.0 + number,
        "last_seen": 1_790_100_000.5 + number,
        "raised_at": f"2026-11-{1 + number % 28:02d}T10:00:00+00:00",
        "reason": "one actor, victims in three regions",
        "links": [{"accounts": [f"chirp:someone.{number}"], "signal": "email_hash"}],
        "merged_actor_ids": [],
        "shared_openers": [],
    }


def _event(number: int, alert: str, action: str) -> dict[str, Any]:
    return {
        "event_id": f"event-{number}",
        "alert_id": alert,
        "action": action,
        "by": "analyst@example.org",
        "at": "2026-11-22T08:00:00+00:00",
        "note": "seen",
    }


def test_a_new_alert_is_shown_as_it_came_with_an_open_status() -> None:
    book = AlertBook()
    alert = _alert(1)
    book.add_alert(alert)
    view = book.view("alert-1")
    assert {key: value for key, value in view.items() if key != "status"} == alert
    assert view["status"] == {
        "state": "open", "by": None, "at": alert["raised_at"], "note": None,
        "history": [{"state": "open", "by": None, "at": alert["raised_at"], "note": None}],
    }  # fmt: skip


def test_moves_follow_the_lifecycle_and_keep_their_history() -> None:
    book = AlertBook()
    book.add_alert(_alert(1))
    assert book.next_state("alert-1", "acknowledge") == "acknowledged"
    assert book.apply_event(_event(1, "alert-1", "acknowledge"))
    assert not book.apply_event(_event(1, "alert-1", "acknowledge"))  # the same event again
    assert book.apply_event(_event(2, "alert-1", "resolve"))
    status = book.view("alert-1")["status"]
    assert status["state"] == "resolved"
    assert [step["state"] for step in status["history"]] == ["open", "acknowledged", "resolved"]
    with pytest.raises(LifecycleError):
        book.next_state("alert-1", "dismiss")
    with pytest.raises(UnknownAlert):
        book.view("alert-2")


def test_an_event_read_before_its_alert_applies_once_the_alert_arrives() -> None:
    book = AlertBook()
    assert not book.apply_event(_event(1, "alert-1", "dismiss"))
    book.add_alert(_alert(1))
    assert book.view("alert-1")["status"]["state"] == "dismissed"


def test_the_queue_filters_and_orders_as_before() -> None:
    book = AlertBook()
    for number, (level, kind) in enumerate(
        [(2, "serial"), (3, "serial"), (3, "brigade"), (2, "serial")], 1
    ):
        book.add_alert(_alert(number, level, kind))
    book.apply_event(_event(1, "alert-2", "resolve"))
    alerts, total = book.query()
    assert total == 4
    # Unresolved first, then most severe, then newest.
    assert [alert["alert_id"] for alert in alerts] == ["alert-3", "alert-4", "alert-1", "alert-2"]
    assert [a["alert_id"] for a in book.query(kinds=["brigade"])[0]] == ["alert-3"]
    assert [a["alert_id"] for a in book.query(regions=["south"])[0]] == ["alert-3", "alert-2"]
    assert book.query(platforms=["talkr"])[1] == 0
    assert [a["alert_id"] for a in book.query(states=["resolved"])[0]] == ["alert-2"]
    assert [a["alert_id"] for a in book.for_actor(f"act_{4:020d}")] == ["alert-4"]


def _allocated(make: Callable[[], object]) -> tuple[object, int]:
    """What `make()` returns, and the bytes it allocated that are still held."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_an_alert_costs_the_book_little_more_than_its_json() -> None:
    """A worker holds every alert it follows. Decoded, an alert of a 300-victim actor was
    about four times its JSON in small objects, and the JSON as orjson returns it keeps a
    buffer of at least 4 KB (change 17)."""
    documents = [orjson.dumps(_alert(number, victims=300)) for number in range(50)]
    as_json = sum(len(document) for document in documents)

    def book() -> AlertBook:
        made = AlertBook()
        for document in documents:
            made.add_alert(orjson.loads(document))
        return made

    def decoded() -> list[dict[str, Any]]:
        return [orjson.loads(document) for document in documents]

    _, held = _allocated(book)
    _, as_dicts = _allocated(decoded)
    assert held < 1.5 * as_json < as_dicts


def test_the_book_holds_its_alerts_in_a_few_blocks_however_many() -> None:
    """One object per alert, allocated all through a run, pinned the heap pages that the
    window's expired edges had shared with them: the worker kept 166 MB after expiry
    where it started at 83 (change 18)."""
    alerts = [orjson.loads(orjson.dumps(_alert(number))) for number in range(1_000)]

    def blocks(count: int) -> int:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            book = AlertBook()
            for alert in alerts[:count]:
                book.add_alert(alert)
            after = tracemalloc.take_snapshot()
            assert len(book) == count
            return sum(stat.count_diff for stat in after.compare_to(before, "filename"))
        finally:
            tracemalloc.stop()

    assert blocks(1_000) - blocks(100) < 20


def test_the_book_keeps_its_alerts_compressed_and_reads_each_back_as_it_came() -> None:
    """The worker keeps every alert it follows: as plain JSON, the bench's alerts were 22 MB
    of what it held after expiry (change 28). Every alert reads back whole, from a
    full block or from the one being filled, in any order."""
    count = 3 * 32 + 5  # full blocks, and some in the block being filled
    documents = [orjson.dumps(_alert(number)) for number in range(count)]

    def book() -> AlertBook:
        made = AlertBook()
        for document in documents:
            made.add_alert(orjson.loads(document))
        return made

    made, held = _allocated(book)
    assert isinstance(made, AlertBook)
    assert held < sum(len(document) for document in documents) / 2
    for number in [*range(count - 1, -1, -7), 0, count - 1, 33, 1]:
        view = made.view(f"alert-{number}")
        assert orjson.dumps({k: v for k, v in view.items() if k != "status"}) == documents[number]
        assert view["status"]["state"] == "open"
    listed, total = made.query(limit=count)
    assert total == count
    assert sorted(alert["alert_id"] for alert in listed) == sorted(
        f"alert-{number}" for number in range(count)
    )
