# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""Where each actor merged away on a partition now lives, kept for as long as the graph lives.

An absorb can arrive for an actor that has itself been merged away meanwhile, and is then
passed on to the actor that absorbed it (graph/records.py), so the forwards outlive the
actors, as the raised alerts do (graph/raised.py). Kept as a dict of actor ids, they were
the same problem as those were: two strings per merge, made all through a run and left
scattered over the heap once expiry had freed everything around them, each holding a page
that the allocator could not give back. After the window slid past the bench's 200,000
reports, 2,203 forwards were about a third of the small objects left on the worker's
nearly free pages (README, "Performance", session 16).

So new forwards go into a dict, and when expiry has caught up they are folded into one
block: each forward's two ids as UTF-8, end to end, ordered by a 64-bit hash of the
merged-away id, with the hashes in an array beside it. The merged-away id is compared on
lookup, so two ids with the same hash are never confused.
"""

from __future__ import annotations

import bisect
from array import array

from graph.raised import actor_hash, worth_folding

__all__ = ["Forwards"]


class Forwards:
    """Merged-away actor id -> the actor id it was merged into; a later forward of the same
    id replaces an earlier one."""

    __slots__ = ("_ends", "_hashes", "_ids", "_recent")

    def __init__(self) -> None:
        self._recent: dict[str, str] = {}
        self._hashes: array[int] = array("Q")  # sorted, one per folded forward
        self._ids = b""  # per folded forward: its merged-away id, then its target
        self._ends: array[int] = array("Q")  # where each of those ids ends in `_ids`

    def set(self, absorbed: str, into: str) -> None:
        self._recent[absorbed] = into

    def get(self, absorbed: str) -> str | None:
        into = self._recent.get(absorbed)
        return into if into is not None else self._folded(absorbed)

    def fold(self) -> None:
        """Move the dict's forwards into the block, once they are enough to be worth it."""
        recent = self._recent
        if not worth_folding(len(recent), len(self._hashes)):
            return
        forwards: list[tuple[int, bytes, bytes]] = []
        for index in range(len(self._hashes)):
            absorbed, into = self._forward(index)
            if absorbed.decode() not in recent:  # else the dict's forward replaces it
                forwards.append((self._hashes[index], absorbed, into))
        forwards += [(actor_hash(absorbed), absorbed.encode(), into.encode())
                     for absorbed, into in recent.items()]  # fmt: skip
        forwards.sort()
        ids = bytearray()
        ends: array[int] = array("Q")
        for _, absorbed_bytes, into_bytes in forwards:
            ids += absorbed_bytes
            ends.append(len(ids))
            ids += into_bytes
            ends.append(len(ids))
        self._hashes = array("Q", [key for key, _, _ in forwards])
        self._ids, self._ends, self._recent = bytes(ids), ends, {}

    def _forward(self, index: int) -> tuple[bytes, bytes]:
        """The folded forward at `index`: its two ids, encoded."""
        ends = self._ends
        start = ends[2 * index - 1] if index else 0
        middle, end = ends[2 * index], ends[2 * index + 1]
        return self._ids[start:middle], self._ids[middle:end]

    def _folded(self, absorbed: str) -> str | None:
        hashes = self._hashes
        if not hashes:
            return None
        key, encoded = actor_hash(absorbed), absorbed.encode()
        index = bisect.bisect_left(hashes, key)
        while index < len(hashes) and hashes[index] == key:
            merged_away, into = self._forward(index)
            if merged_away == encoded:
                return into.decode()
            index += 1
        return None
