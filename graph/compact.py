"""Giving memory back: dicts that keep their largest table, and state filed for retention."""

from __future__ import annotations

import sys
from typing import TypeVar

__all__ = ["file_due", "passed_buckets", "right_sized"]

K = TypeVar("K")
T = TypeVar("T")
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


# Retention by buckets: the resolver (its accounts and signal values) and the graphs (their
# actors) file what they keep under the bucket of its newest (or oldest) time, a bucket
# being a fixed slice of event time, and check a bucket once the window's cutoff has passed
# all of it. A filed item costs a list slot, where a heap entry cost a tuple and a float.


def file_due(due: dict[int, list[T]], item: T, moment: float, bucket: float) -> None:
    """File `item` under the bucket of `moment`."""
    due.setdefault(int(moment // bucket), []).append(item)


def passed_buckets(due: dict[int, list[T]], below: float) -> list[list[T]]:
    """Take out the buckets numbered under `below`, oldest first."""
    passed = sorted(bucket for bucket in due if bucket < below)
    return [due.pop(bucket) for bucket in passed]
