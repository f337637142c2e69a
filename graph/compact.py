"""Giving memory back: Python dicts keep their largest table after entries are deleted."""

from __future__ import annotations

import sys
from typing import TypeVar

__all__ = ["right_sized"]

K = TypeVar("K")
V = TypeVar("V")

# What a freshly built dict allocates per entry, at most (CPython 3.11: 24-byte entries,
# an index table 1.5-3 times their count, 1-8 bytes an index; measured 26-42 bytes).
_FRESH_BYTES_PER_ENTRY = 48


def right_sized(table: dict[K, V]) -> dict[K, V]:
    """`table`, or a copy of it when it holds under a quarter of what it has allocated.

    A dict never shrinks when entries go (CPython keeps its hash table), so without this a
    window that slid past a million actors kept their slots. The dict's own allocation is
    the measure (O(1)), so callers keep no record of how large it once was; a growing dict
    is at most twice its fresh size, and is never copied."""
    if sys.getsizeof(table) > 4 * (_FRESH_BYTES_PER_ENTRY * len(table) + 256):
        return dict(table)
    return table
