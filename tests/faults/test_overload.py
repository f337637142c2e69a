"""Overload: input at twice the rate the worker sustains. The backlog waits in Kafka, not in
the worker: its memory stays flat, the lag drains afterwards, and nothing is lost."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import orjson
import pytest

from streams.push import push_messages
from tests.factories import make_report
from tests.integration.conftest import Deployment, Worker

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OVERLOAD_SECONDS = 60  # "twice the sustainable rate for a minute"
# The least a buffered report would cost as Python objects (its bytes, 33 + ~190, and the
# consumer record around them).
RECORD_FLOOR = 350


def _processed(worker: Worker) -> float:
    """Reports counted so far; an overloaded worker may answer /metrics slowly: retried."""
    for _ in range(10):
        try:
            text = worker.metrics()
        except OSError:
            time.sleep(1)
            continue
        return sum(float(v) for v in re.findall(
            r'^linkwatch_reports_total\{[^}]*\} ([\d.e+]+)$', text, re.M))  # fmt: skip
    raise AssertionError(f"/metrics did not answer:\n{worker.tail()}")


def _rss(worker: Worker) -> int:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert found is not None
    return int(found.group(1)) * 1024


def test_twice_the_sustainable_rate_keeps_memory_flat_and_loses_nothing(
    deployment: Deployment,
) -> None:
    worker = deployment.worker()
    worker.wait_ready()
    # A working set of actors and victims; after it, the same reports again (redeliveries):
    # the graph does not grow, so any growth of the worker's memory would be buffered input.
    regions = ["kent", "devon", "essex"]
    reports = [
        orjson.dumps(make_report(f"actor-{i % 2000}", f"victim-{i}", regions[i % 3],
                                 report_id=f"r-{i}"))
        for i in range(20_000)
    ]  # fmt: skip
    deployment.push(reports, name="working-set.jsonl")
    started = time.monotonic()
    while _processed(worker) < len(reports):
        assert time.monotonic() - started < 180, worker.tail()
        time.sleep(0.2)
    # The sustainable rate, measured here: redeliveries of the working set, as fast as it goes
    # (pushed first, then timed from the first to the last processed, as the bench does).
    before = _processed(worker)
    deployment.push(reports * 3, name="measure.jsonl")
    while (first := _processed(worker)) == before:
        time.sleep(0.05)
    started = time.monotonic()
    while _processed(worker) < before + 3 * len(reports):
        time.sleep(0.05)
    sustainable = (before + 3 * len(reports) - first) / (time.monotonic() - started)
    baseline = _rss(worker)

    rate = 2 * sustainable
    total = int(rate * OVERLOAD_SECONDS)
    flood = [reports[i % len(reports)] for i in range(total)]
    before = _processed(worker)
    pusher = threading.Thread(target=push_messages, args=(deployment.settings, flood),
                              kwargs={"rate": rate})  # fmt: skip
    pusher.start()
    pushing_since, samples = time.monotonic(), []
    while pusher.is_alive():
        samples.append((time.monotonic() - pushing_since, _rss(worker)))
        time.sleep(0.25)
    pusher.join()
    peak = max(rss for _, rss in samples)
    # All of it is in Kafka now; what the worker has not processed yet is the backlog.
    lag_seen = before + total - _processed(worker)
    started = time.monotonic()
    while _processed(worker) < before + total:
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        peak = max(peak, _rss(worker))
        time.sleep(0.25)
        assert time.monotonic() - started < 600, "the backlog did not drain"
    # Nothing lost: every message pushed was processed (here: as a duplicate) exactly once.
    assert _processed(worker) == before + total
    # ...and it waited there, not in the worker. What a worker buffers is bounded by its
    # settings (per agent, Faust's stream buffer of 16 fetched batches of at most 2,000
    # records, and aiokafka's prefetch of 1 MiB a partition); held in memory, the backlog
    # would have cost at least `backlog`, and the worker grew by well under half of that.
    print(f"sustainable {sustainable:,.0f}/s, pushed {total:,} at {rate:,.0f}/s, "
          f"lag at the end of the push {lag_seen:,.0f}, "
          f"RSS {baseline / 2**20:.0f} -> {peak / 2**20:.0f} MB")  # fmt: skip
    backlog = lag_seen * RECORD_FLOOR
    assert backlog > 256 * 2**20, "the backlog was too small to tell buffering from state"
    assert peak - baseline < backlog / 2, (baseline, peak, backlog)
