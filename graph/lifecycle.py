"""The alert lifecycle: open -> acknowledged -> resolved or dismissed, and the alert queue.

An AlertBook is built from two streams: the alerts themselves and the lifecycle events
responders cause. Both come from Kafka topics that every worker follows, so every worker
holds the same book. Applying the same events in the same order gives the same states.
"""

from __future__ import annotations

import zlib
from array import array
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
_OPEN = STATES.index("open")
_UNRESOLVED = frozenset({STATES.index("open"), STATES.index("acknowledged")})


class UnknownAlert(KeyError):
    """No alert with that id (yet)."""


class LifecycleError(ValueError):
    """A move the lifecycle does not allow from the alert's current state."""


class _Column:
    """Strings, one per alert, in one block: the UTF-8 bytes end to end, and where each
    ends."""

    __slots__ = ("_data", "_ends")

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("Q")

    def append(self, value: bytes) -> None:
        self._data += value
        self._ends.append(len(self._data))

    def __getitem__(self, position: int) -> bytes:
        start = self._ends[position - 1] if position else 0
        return bytes(self._data[start : self._ends[position]])

    def __len__(self) -> int:
        return len(self._ends)


class _Packed:
    """Strings, one per alert, compressed a block of `BLOCK` at a time once the block is
    full: an alert's JSON repeats its keys, its actor's accounts and the platforms' report
    id prefixes, and 32 of them take a fifth of the room compressed (measured on the
    bench's alerts: 1.4 KB each, 5.5x smaller at zlib's level 1, 7.3x at its default 6 for
    twice the time). The block being filled stays as it is; the block read last is kept
    decompressed, since a query reads neighbouring alerts."""

    BLOCK = 32
    LEVEL = 1  # zlib's fastest: compressing is on the worker's event loop

    __slots__ = ("_blocks", "_ends", "_last", "_open")

    def __init__(self) -> None:
        self._blocks = _Column()  # each full block, compressed
        self._open = bytearray()  # the block being filled
        self._ends = array("L")  # where each string ends inside its block
        self._last: tuple[int, bytes] = (-1, b"")  # the block read last, decompressed

    def append(self, value: bytes) -> None:
        self._open += value
        self._ends.append(len(self._open))
        if len(self._ends) % self.BLOCK == 0:
            self._blocks.append(zlib.compress(self._open, self.LEVEL))
            self._open = bytearray()

    def __getitem__(self, position: int) -> bytes:
        block, first = divmod(position, self.BLOCK)
        start = self._ends[position - 1] if first else 0
        return bytes(self._block(block)[start : self._ends[position]])

    def _block(self, block: int) -> bytes | bytearray:
        if block == len(self._blocks):
            return self._open
        if self._last[0] != block:
            self._last = (block, zlib.decompress(self._blocks[block]))
        return self._last[1]


class _Sets:
    """A small set of names per alert (its regions, its platforms) as numbers, in one
    block: the names themselves are few and kept once."""

    __slots__ = ("_ends", "_members", "_numbers", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self._numbers: dict[str, int] = {}
        self._members = array("L")
        self._ends = array("Q")

    def append(self, names: Iterable[Any]) -> None:
        for name in names:
            number = self._numbers.setdefault(str(name), len(self.names))
            if number == len(self.names):
                self.names.append(str(name))
            self._members.append(number)
        self._ends.append(len(self._members))

    def numbers(self, names: Iterable[str]) -> set[int]:
        return {self._numbers[name] for name in names if name in self._numbers}

    def meets(self, position: int, numbers: set[int]) -> bool:
        start = self._ends[position - 1] if position else 0
        return any(number in numbers for number in self._members[start : self._ends[position]])


class _Index:
    """Alert id -> position, as an open-addressing table of two arrays: the ids' hashes
    (Python's own, for this process only) and their positions. The id itself is checked
    against the book's column of ids."""

    __slots__ = ("_hashes", "_ids", "_positions", "count")

    def __init__(self, ids: _Column) -> None:
        self._ids = ids
        self.count = 0
        self._hashes = array("q", bytes(8 * 8))
        self._positions = array("q", [-1]) * 8

    def find(self, alert_id: str) -> int:
        """The alert's position, or -1."""
        wanted, encoded = hash(alert_id), alert_id.encode()
        mask = len(self._positions) - 1
        slot = wanted & mask
        while (position := self._positions[slot]) >= 0:
            if self._hashes[slot] == wanted and self._ids[position] == encoded:
                return position
            slot = (slot + 1) & mask
        return -1

    def add(self, alert_id: str, position: int) -> None:
        if (self.count + 1) * 2 > len(self._positions):
            self._grow()
        self._place(hash(alert_id), position)
        self.count += 1

    def _place(self, hashed: int, position: int) -> None:
        mask = len(self._positions) - 1
        slot = hashed & mask
        while self._positions[slot] >= 0:
            slot = (slot + 1) & mask
        self._hashes[slot], self._positions[slot] = hashed, position

    def _grow(self) -> None:
        hashes, positions = self._hashes, self._positions
        self._hashes = array("q", bytes(16 * len(positions)))
        self._positions = array("q", [-1]) * (2 * len(positions))
        for slot, position in enumerate(positions):
            if position >= 0:
                self._place(hashes[slot], position)


class AlertBook:
    """Every alert a worker has followed, and its lifecycle state.

    The alerts are kept in a few large blocks, not as objects: a worker holds every alert
    it follows for its lifetime, and one object per alert, allocated all through a run,
    pinned the pages the window's expired edges had shared with them (README,
    "Performance", changes 17 and 18). Decoded, an alert was about 4.8 KB of small
    objects; then its JSON bytes and a few fields as objects of their own (about seven
    per alert). Now each alert is its JSON bytes in one column, compressed 32 alerts at a
    time (a fifth of the room: as plain JSON, the 15,000-20,000 alerts of the bench's
    phases were 22-25 MB of the worker's memory after expiry; change 28), and what the
    queue filters and sorts on is in arrays beside it; its lifecycle history is kept as
    objects only once a responder has acted on it."""

    def __init__(self) -> None:
        self._raw = _Packed()  # each alert's JSON
        self._ids = _Column()  # each alert's id, UTF-8
        self._raised = _Column()  # each alert's raised_at as text: the queue sorts on it
        self._index = _Index(self._ids)
        self._actors = array("q")  # hash of each alert's actor id (checked on a match)
        self._levels = array("l")
        self._kinds = _Sets()
        self._regions = _Sets()
        self._platforms = _Sets()
        self._states = bytearray()  # each alert's state, by its number in STATES
        self._histories: dict[int, list[dict[str, Any]]] = {}  # only alerts that moved
        self._early: dict[str, list[dict[str, Any]]] = {}  # events read before their alert
        self._events: set[str] = set()

    def __len__(self) -> int:
        return len(self._states)

    def add_alert(self, alert: dict[str, Any]) -> None:
        """An alert from the alerts topic (a redelivered one changes nothing)."""
        alert_id = str(alert["alert_id"])
        if self._index.find(alert_id) >= 0:
            return
        position = len(self._states)
        self._raw.append(orjson.dumps(alert))
        self._ids.append(alert_id.encode())
        self._raised.append(str(alert["raised_at"]).encode())
        self._actors.append(hash(str(alert["actor_id"])))
        self._levels.append(int(alert["level"]))
        self._kinds.append([alert.get("kind", "serial")])
        self._regions.append(alert["regions"])
        self._platforms.append(alert["platforms"])
        self._states.append(_OPEN)
        self._index.add(alert_id, position)
        for event in self._early.pop(alert_id, ()):
            self.apply_event(event)

    def next_state(self, alert_id: str, action: str) -> str:
        """The state `action` would lead to; raises UnknownAlert or LifecycleError."""
        position = self._position(alert_id)
        allowed, target = ACTIONS[action]
        state = STATES[self._states[position]]
        if state not in allowed:
            raise LifecycleError(f"cannot {action} an alert that is {state}")
        return target

    def apply_event(self, event: dict[str, Any]) -> bool:
        """A lifecycle event from the events topic; False when it no longer applies.

        Two responders can act at once on different workers; the topic's order decides,
        and a move that is no longer allowed when its turn comes is ignored everywhere.
        """
        event_id = str(event["event_id"])
        if event_id in self._events:
            return False
        position = self._index.find(str(event["alert_id"]))
        if position < 0:
            self._early.setdefault(str(event["alert_id"]), []).append(event)
            return False
        self._events.add(event_id)
        allowed, target = ACTIONS[str(event["action"])]
        if STATES[self._states[position]] not in allowed:
            return False
        step = {"state": target, "by": event["by"], "at": event["at"], "note": event.get("note")}
        self._histories[position] = [*self._history(position), step]
        self._states[position] = STATES.index(target)
        return True

    def view(self, alert_id: str) -> dict[str, Any]:
        return self._view(self._position(alert_id))

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
        states, regions, platforms, kinds = (
            [str(name) for name in names] for names in (states, regions, platforms, kinds)
        )
        states_ = {STATES.index(state) for state in states if state in STATES}
        regions_, platforms_, kinds_ = (
            column.numbers(names)
            for column, names in ((self._regions, regions), (self._platforms, platforms),
                                  (self._kinds, kinds))
        )  # fmt: skip
        actors = {str(actor) for actor in actor_ids}
        hashes = {hash(actor) for actor in actors}
        if (states and not states_) or (regions and not regions_) or (
            platforms and not platforms_) or (kinds and not kinds_):  # fmt: skip
            return [], 0  # a wanted name no alert has
        matches = [
            position
            for position in range(len(self._states))
            if (not states_ or self._states[position] in states_)
            and (not kinds_ or self._kinds.meets(position, kinds_))
            and (not regions_ or self._regions.meets(position, regions_))
            and (not platforms_ or self._platforms.meets(position, platforms_))
            and (not actors or self._actors[position] in hashes)
        ]
        if actors:  # a hash is not an id: check the few that matched
            matches = [position for position in matches
                       if str(orjson.loads(self._raw[position])["actor_id"]) in actors]  # fmt: skip
        # Two stable sorts: newest first, then unresolved and most severe ahead of that.
        matches.sort(key=self._raised.__getitem__, reverse=True)
        matches.sort(key=lambda p: (self._states[p] not in _UNRESOLVED, -self._levels[p]))
        return [self._view(position) for position in matches[:limit]], len(matches)

    def _position(self, alert_id: str) -> int:
        position = self._index.find(alert_id)
        if position < 0:
            raise UnknownAlert(alert_id)
        return position

    def _history(self, position: int) -> list[dict[str, Any]]:
        history = self._histories.get(position)
        if history is None:  # open, nothing since: the step that opened it
            raised_at = orjson.loads(self._raw[position])["raised_at"]
            return [{"state": "open", "by": None, "at": raised_at, "note": None}]
        return history

    def _view(self, position: int) -> dict[str, Any]:
        alert = dict(orjson.loads(self._raw[position]))
        history = self._histories.get(position) or [
            {"state": "open", "by": None, "at": alert["raised_at"], "note": None}
        ]
        last = history[-1]
        status = {"state": last["state"], "by": last["by"], "at": last["at"]}
        return alert | {"status": status | {"note": last["note"], "history": history}}
