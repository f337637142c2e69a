"""The low watermark: the slowest input partition sets it, so a backlog cannot run ahead."""

from __future__ import annotations

import math
import random

import pytest

from graph.watermark import LowWatermark

DAY = 86400.0


def test_a_partition_read_first_cannot_carry_the_watermark_past_the_others() -> None:
    watermark = LowWatermark(sources=2, active_within=100)
    # Partition 0's whole backlog first: two years of reports.
    for day in range(0, 730, 10):
        assert watermark.observe(0, day * DAY) == -math.inf  # partition 1 has sent nothing
    assert watermark.observe(1, 5 * DAY) == 5 * DAY
    assert watermark.observe(1, 400 * DAY) == 400 * DAY
    assert watermark.observe(1, 300 * DAY) == 400 * DAY  # it never goes back


def test_a_silent_partition_stops_holding_it_back_after_enough_traffic() -> None:
    watermark = LowWatermark(sources=2, active_within=10)
    for i in range(10):
        watermark.observe(0, i * DAY)
    assert watermark.value == -math.inf
    assert watermark.observe(0, 10 * DAY) == 10 * DAY  # partition 1 is idle by now


def test_reports_sent_again_after_a_crash_do_not_make_a_silent_partition_idle() -> None:
    # Partition 1 never sends. Partition 0 sends 8 reports (offsets 0-7); a crash makes
    # intake send offsets 3-7 again, twice: 18 reports seen, 8 of them new.
    offsets = [*range(8), *range(3, 8), *range(3, 8)]
    watermark = LowWatermark(sources=2, active_within=10)
    seen = [watermark.observe(0, (offset + 1) * DAY, offset) for offset in offsets]
    assert seen == [-math.inf] * len(offsets)  # as in a run without the crash: still held
    # The 11th new report is what makes partition 1 idle, crash or no crash.
    assert [watermark.observe(0, offset * DAY, offset) for offset in (8, 9, 10)] == [
        -math.inf, -math.inf, 10 * DAY
    ]  # fmt: skip
    # Without offsets (rows from before they were carried) every report counts.
    counted = LowWatermark(sources=2, active_within=10)
    assert [counted.observe(0, (o + 1) * DAY) for o in offsets][-1] == 8 * DAY


def test_one_source_is_the_newest_event_seen() -> None:
    watermark = LowWatermark()
    assert [watermark.observe(0, t) for t in (5.0, 3.0, 9.0)] == [5.0, 5.0, 9.0]


def _reference(sources: int, active_within: int, events: list[tuple[int, float]]) -> list[float]:
    """The definition, recomputed from scratch for every report."""
    newest = dict.fromkeys(range(sources), -math.inf)
    last_seen = dict.fromkeys(range(sources), 0)
    value, out = -math.inf, []
    for sequence, (source, moment) in enumerate(events, start=1):
        last_seen[source] = sequence
        newest[source] = max(newest[source], moment)
        active = [p for p in newest if last_seen[p] > sequence - active_within]
        if sequence <= active_within:
            active = list(newest)
        value = max(value, min(newest[p] for p in active))
        out.append(value)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_incremental_watermark_matches_its_definition(seed: int) -> None:
    rng = random.Random(seed)
    sources, active_within = rng.randint(1, 5), rng.randint(1, 30)
    # Bursts from one partition at a time, some partitions silent for long stretches.
    events = []
    for _ in range(60):
        source = rng.randrange(sources)
        events += [(source, rng.uniform(0, 1000)) for _ in range(rng.randint(1, 40))]
    watermark = LowWatermark(sources, active_within)
    got = [watermark.observe(source, moment) for source, moment in events]
    assert got == _reference(sources, active_within, events)
