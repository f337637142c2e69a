# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The event-time watermark: how far the whole stream has got, judged by its slowest part.

Reports reach the resolver from several input partitions, and Kafka hands a consumer a
whole backlog of one partition at a time. Judged against the newest event from any of them,
one partition racing ahead would make the others' reports look too old. This was measured:
the resolver saw reports a median of 260 days behind the newest, and recall fell to 0.94.
So the watermark is the minimum, over the input partitions still sending, of the newest
event time each has sent.

Every input partition counts from the start: one that has sent nothing yet holds the
watermark back, or a backlog of partition 0 read first would carry it years ahead of the
others. A partition counts as still sending while it has sent one of the last
`active_within` reports, and a silent one stops holding the watermark after that many.
Idleness is judged by traffic, not wall-clock time, so the watermark is a function of the
resolver's input order alone, and replay reproduces it. It never goes back.

Traffic counts each input message once. After a crash, intake sends again what it had not
committed, so the resolver sees some reports twice; counted again, they made a silent
partition look idle sooner than in a run without the crash, and the watermark then moved
on and expired actors that run kept (found by the SIGKILL test: about 10,300 rows for
3,800 reports after three kills, past the 10,000 that lets a silent partition go). Each
row therefore carries its input offset, and a report at or below the highest offset
already seen from its partition is a redelivery: it changes nothing here. Intake reads a
partition in offset order, so the reports counted are exactly those of a run without
the crash, in the same order.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LowWatermark"]


class LowWatermark:
    def __init__(self, sources: int = 1, active_within: int = 10_000) -> None:
        if sources < 1 or active_within < 1:
            raise ValueError("sources and active_within must be at least 1")
        self.active_within = active_within
        self.value = -math.inf
        # input partition -> newest event time it has sent, and when it last sent one
        self._newest: dict[int, float] = dict.fromkeys(range(sources), -math.inf)
        self._last_seen: dict[int, int] = dict.fromkeys(range(sources), 0)
        # input partition -> the highest input offset counted from it
        self._offsets: dict[int, int] = {}
        self._sequence = 0
        self._settled_until = 0

    # Pickled when a resolver process hands its state on (`AliasResolver.__reduce__`).
    def __reduce__(self) -> tuple[Any, ...]:
        state = (self.value, self._newest, self._last_seen, self._offsets, self._sequence,
                 self._settled_until)  # fmt: skip
        return (LowWatermark, (1, self.active_within), state)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.value, self._newest, self._last_seen, self._offsets, self._sequence,
         self._settled_until) = state  # fmt: skip

    def seen(self, source: int, offset: int) -> bool:
        """Whether the report at `offset` of input partition `source` was counted before:
        at or below the highest offset counted from it, a redelivery. A report without an
        offset (-1) never was."""
        return 0 <= offset <= self._offsets.get(source, -1)

    def observe(self, source: int, event_time: float, offset: int = -1) -> float:
        """Count one report from input partition `source`; returns the watermark.

        `offset` is the report's offset in its input partition: a report at or below the
        highest one counted from that partition is a redelivery and counts for nothing.
        -1 (rows written before offsets were carried) counts every report."""
        if offset >= 0:
            if self.seen(source, offset):
                return self.value
            self._offsets[source] = offset
        self._sequence += 1
        self._last_seen[source] = self._sequence
        if event_time > self._newest.get(source, -math.inf):
            self._newest[source] = event_time
        elif self._sequence < self._settled_until:
            # Nothing the minimum depends on moved: no partition's newest time rose, and
            # no partition can have fallen idle yet (they are judged by traffic).
            return self.value
        horizon = self._sequence - self.active_within
        warming = self._sequence <= self.active_within
        active = [
            partition for partition, seen in self._last_seen.items() if seen > horizon or warming
        ]
        low = min(self._newest[partition] for partition in active)
        # The first sequence number at which an active partition could fall idle.
        self._settled_until = (
            self.active_within + 1
            if warming
            else min(self._last_seen[partition] for partition in active) + self.active_within
        )
        self.value = max(self.value, low)
        return self.value
