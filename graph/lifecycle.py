"""The alert lifecycle: open -> acknowledged -> resolved or dismissed, and the alert queue.

An AlertBook is built from two streams: the alerts themselves and the lifecycle events
responders cause. Both come from Kafka topics that every worker follows, so every worker
holds the same book. Applying the same events in the same order gives the same states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(slots=True)
class _Entry:
    alert: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.history[-1]["state"])

    def view(self) -> dict[str, Any]:
        last = self.history[-1]
        status = {"state": last["state"], "by": last["by"], "at": last["at"]}
        return self.alert | {"status": status | {"note": last["note"], "history": self.history}}


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
        opened = {"state": "open", "by": None, "at": alert["raised_at"], "note": None}
        self._entries[alert_id] = _Entry(alert, [opened])
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
        entry.history.append(
            {"state": target, "by": event["by"], "at": event["at"], "note": event.get("note")}
        )
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
            and (not regions_ or regions_ & set(entry.alert["regions"]))
            and (not platforms_ or platforms_ & set(entry.alert["platforms"]))
            and (not kinds_ or entry.alert.get("kind", "serial") in kinds_)
            and (not actors_ or entry.alert["actor_id"] in actors_)
        ]
        # Two stable sorts: newest first, then unresolved and most severe ahead of that.
        matches.sort(key=lambda entry: str(entry.alert["raised_at"]), reverse=True)
        matches.sort(key=lambda entry: (entry.state not in _UNRESOLVED, -int(entry.alert["level"])))
        return [entry.view() for entry in matches[:limit]], len(matches)
