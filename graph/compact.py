"""Giving memory back: Python dicts keep their largest table after entries are deleted."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["right_sized"]

K = TypeVar("K")
V = TypeVar("V")


def right_sized(table: dict[K, V], peak: int) -> tuple[dict[K, V], int]:
    """`table`, copied into a table of its own size once it holds under a quarter of its
    `peak`; and the new peak. A dict never shrinks when entries go (CPython keeps its hash
    table), so without this a window that slid past a million actors kept their slots."""
    if len(table) * 4 < peak:
        return dict(table), len(table)
    return table, max(peak, len(table))
