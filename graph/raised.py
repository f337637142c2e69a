# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The alerts each actor has raised, kept for as long as the graph lives.

An alert id (actor, kind, level) is never raised twice, so what an actor has raised must
outlive the actor itself: it is kept after the window has slid past its edges, and read
back from the alerts topic when a partition's graph is rebuilt.

Kept as a dict keyed by actor id, these entries were the only objects left over from
their time once expiry had emptied the graph, scattered over the heap, each string
holding a page that the allocator could not give back: after the window slid past 1M
edges (streams/scaling.py), 3,985 of them kept 17 MB of RSS, where a run without alerts
kept under 1 MB. So new entries go into a dict, and when expiry has caught up they are
folded into two sorted arrays, one allocation each: 64-bit hashes of the actor ids and
their levels, 12 bytes an actor.

Two actor ids with the same 64-bit hash would share an entry (one actor's alert taken as
already raised); with a million actors that have alerted, the chance is about 3 in 10^8.
"""

from __future__ import annotations

import bisect
from array import array

__all__ = ["FOLD_AT_LEAST", "RaisedAlerts", "actor_hash", "worth_folding"]

_BRIGADE = 1 << 31  # the flag for "a brigade alert was raised"; the serial level below it
_HASH_BITS = (1 << 64) - 1
FOLD_AT_LEAST = 64  # entries folded at once, at least (`worth_folding`)


def actor_hash(actor_id: str) -> int:
    """A 64-bit hash of an actor id, for this process only (what outlives the window is
    rebuilt by replay, never stored): str hashes are cached, so no work per lookup."""
    return hash(actor_id) & _HASH_BITS


def worth_folding(recent: int, folded: int) -> bool:
    """Whether `recent` entries kept as objects are worth rewriting a block of `folded`
    for: at least FOLD_AT_LEAST, and an eighth of the block (amortised O(1) an entry)."""
    return recent >= max(FOLD_AT_LEAST, folded // 8)


class RaisedAlerts:
    """Per actor: the highest serial level raised, and whether a brigade alert was."""

    __slots__ = ("_keys", "_recent", "_values")

    def __init__(self) -> None:
        self._recent: dict[str, int] = {}
        self._keys: array[int] = array("Q")  # sorted
        self._values: array[int] = array("I")  # the serial level, | _BRIGADE

    def serial_level(self, actor_id: str) -> int:
        return self._value(actor_id) & (_BRIGADE - 1)

    def brigade_raised(self, actor_id: str) -> bool:
        return bool(self._value(actor_id) & _BRIGADE)

    def raise_serial(self, actor_id: str, level: int) -> None:
        self._recent[actor_id] = (self._value(actor_id) & _BRIGADE) | level

    def raise_brigade(self, actor_id: str) -> None:
        self._recent[actor_id] = self._value(actor_id) | _BRIGADE

    def fold(self) -> None:
        """Move the dict's entries into the arrays, once they are enough to be worth it."""
        recent, keys, values = self._recent, self._keys, self._values
        if not worth_folding(len(recent), len(keys)):
            return
        merged_keys: array[int] = array("Q")
        merged_values: array[int] = array("I")
        start = 0
        entries = sorted((actor_hash(actor_id), value) for actor_id, value in recent.items())
        for key, value in entries:
            end = bisect.bisect_left(keys, key, start)
            merged_keys.extend(keys[start:end])
            merged_values.extend(values[start:end])
            if end < len(keys) and keys[end] == key:
                end += 1  # the dict's entry supersedes it (it was made from it)
            merged_keys.append(key)
            merged_values.append(value)
            start = end
        merged_keys.extend(keys[start:])
        merged_values.extend(values[start:])
        self._keys, self._values, self._recent = merged_keys, merged_values, {}

    def _value(self, actor_id: str) -> int:
        value = self._recent.get(actor_id)
        if value is not None:
            return value
        keys = self._keys
        if not keys:
            return 0
        key = actor_hash(actor_id)
        index = bisect.bisect_left(keys, key)
        return self._values[index] if index < len(keys) and keys[index] == key else 0
