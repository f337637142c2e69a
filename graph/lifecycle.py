"""The alert lifecycle: open -> acknowledged -> resolved or dismissed, and the alert queue.

An AlertBook is built from two streams: the alerts themselves and the lifecycle events
responders cause. Both come from Kafka topics that every worker follows, so every worker
holds the same book. Applying the same events in the same order gives the same states.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = ["ACTIONS", "AlertBook", "LifecycleError", "UnknownAlert"]

# action -> (states it may start from, state it leads to)
ACTIONS: Mapping[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"open"}), "acknowledged"),
    "resolve": (frozenset({"open", "acknowledged"}), "resolved"),
    "dismiss": (frozenset({"open", "acknowledged"}), "dismissed"),
}
STATES = ("open", "acknowledged", "resolved", "dismissed")
_UNRESOLVED = frozenset({"open", "acknowledged"})


class UnknownAlert(KeyError):
    """No alert with that id (yet)."""


class LifecycleError(ValueError):
    """A move the lifecycle does not allow from the alert's current state."""


class _Entry:
    """One alert in the book, kept small: a worker holds every alert it has followed, and
    as decoded JSON (a dict, a list per field, a string per account and report id) an
    alert cost about 4.8 KB of small objects scattered through the heap, which pinned the
    pages the window's expired edges had shared with them (README, "Performance", change
    17). So the alert is kept as its JSON bytes, with the few fields the queue filters and
    sorts on beside it, and its lifecycle history only once a responder has acted on it."""

    __slots__ = ("_history", "actor_id", "kind", "level", "platforms", "raised_at", "raw",
                 "regions")  # fmt: skip

    def __init__(self, alert: dict[str, Any]) -> None:
        # A copy of exactly its length: orjson's own result keeps a buffer of at least 4 KB.
        self.raw = memoryview(orjson.dumps(alert)).tobytes()
        self.actor_id = str(alert["actor_id"])
        self.kind = sys.intern(str(alert.get("kind", "serial")))
        self.level = int(alert["level"])
        self.raised_at = alert["raised_at"]
        self.regions = tuple(sys.intern(str(region)) for region in alert["regions"])
        self.platforms = tuple(sys.intern(str(platform)) for platform in alert["platforms"])
        self._history: list[dict[str, Any]] | None = None  # None: open, nothing since

    @property
    def alert(self) -> dict[str, Any]:
        return dict(orjson.loads(self.raw))

    @property
    def history(self) -> list[dict[str, Any]]:
        if self._history is None:
            return [{"state": "open", "by": None, "at": self.raised_at, "note": None}]
        return self._history

    @property
    def state(self) -> str:
        return "open" if self._history is None else str(self._history[-1]["state"])

    def move(self, state: str, by: Any, at: Any, note: Any) -> None:
        self._history = [*self.history, {"state": state, "by": by, "at": at, "note": note}]

    def view(self) -> dict[str, Any]:
        history = self.history
        last = history[-1]
        status = {"state": last["state"], "by": last["by"], "at": last["at"]}
        return self.alert | {"status": status | {"note": last["note"], "history": history}}


class AlertBook:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._early: dict[str, list[dict[str, Any]]] = {}  # events read before their alert
        self._events: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def add_alert(self, alert: dict[str, Any]) -> None:
        """An alert from the alerts topic (a redelivered one changes nothing)."""
        alert_id = str(alert["alert_id"])
        if alert_id in self._entries:
            return
        self._entries[alert_id] = _Entry(alert)
        for event in self._early.pop(alert_id, ()):
            self.apply_event(event)

    def next_state(self, alert_id: str, action: str) -> str:
        """The state `action` would lead to; raises UnknownAlert or LifecycleError."""
        entry = self._entries.get(alert_id)
        if entry is None:
            raise UnknownAlert(alert_id)
        allowed, target = ACTIONS[action]
        if entry.state not in allowed:
            raise LifecycleError(f"cannot {action} an alert that is {entry.state}")
        return target

    def apply_event(self, event: dict[str, Any]) -> bool:
        """A lifecycle event from the events topic; False when it no longer applies.

        Two responders can act at once on different workers; the topic's order decides,
        and a move that is no longer allowed when its turn comes is ignored everywhere.
        """
        event_id = str(event["event_id"])
        if event_id in self._events:
            return False
        entry = self._entries.get(str(event["alert_id"]))
        if entry is None:
            self._early.setdefault(str(event["alert_id"]), []).append(event)
            return False
        self._events.add(event_id)
        allowed, target = ACTIONS[str(event["action"])]
        if entry.state not in allowed:
            return False
        entry.move(target, event["by"], event["at"], event.get("note"))
        return True

    def view(self, alert_id: str) -> dict[str, Any]:
        entry = self._entries.get(alert_id)
        if entry is None:
            raise UnknownAlert(alert_id)
        return entry.view()

    def for_actor(self, actor_id: str) -> list[dict[str, Any]]:
        return self.query(actor_ids={actor_id}, limit=1000)[0]

    def query(
        self,
        states: Iterable[str] = (),
        regions: Iterable[str] = (),
        platforms: Iterable[str] = (),
        kinds: Iterable[str] = (),
        actor_ids: Iterable[str] = (),
        limit: int = 200,
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching alerts, unresolved first, then most severe, then newest; and the total."""
        wanted = [set(values) for values in (states, regions, platforms, kinds, actor_ids)]
        states_, regions_, platforms_, kinds_, actors_ = wanted
        matches = [
            entry
            for entry in self._entries.values()
            if (not states_ or entry.state in states_)
            and (not regions_ or not regions_.isdisjoint(entry.regions))
            and (not platforms_ or not platforms_.isdisjoint(entry.platforms))
            and (not kinds_ or entry.kind in kinds_)
            and (not actors_ or entry.actor_id in actors_)
        ]
        # Two stable sorts: newest first, then unresolved and most severe ahead of that.
        matches.sort(key=lambda entry: str(entry.raised_at), reverse=True)
        matches.sort(key=lambda entry: (entry.state not in _UNRESOLVED, -entry.level))
        return [entry.view() for entry in matches[:limit]], len(matches)
