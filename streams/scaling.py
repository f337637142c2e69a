"""How linkwatch's state scales: per-report cost and memory against live edges.

`make bench` runs this as its own process (`python -m streams.scaling EDGES...`), so its
RSS is the state's and nothing else's. It feeds reports straight to the stages that keep
state (alias resolver -> partition graph -> rule), the same code the agents run, skipping
Kafka and validation: their cost per report does not depend on how much state there is,
and this measures what does. Reports arrive in event-time order inside one window, so
every edge stays live until the end, when one report far in the future expires them all.

The stream: actors with a geometric number of victims (mean 2.5), victims in 48 regions,
one account in 8 sharing a device with another actor's account (so merges happen), a new
victim per report. Its identifiers have the lengths of those the worker holds, which are
intake's pseudonyms (graph/identity.py): a victim `v_` and 20 hex digits, an offender
token `o_` and 31 characters (an 11-character account sealed), a signal value `s_` and 20
hex digits; report ids as the simulator's, `chirp-0000042`. Each is made by formatting a
counter, not by intake's keyed hashes, which would cost more than the stages measured.
Before session 21 it used short names (`victim-42`, `r42`, `acct-42`, `dev-42`): 573 bytes
an edge at 1M edges where these make 610, and intake's own pseudonyms 640 (the stream put
through `graph/privacy.py:pseudonymise`, an ad-hoc run, where the objects the resolver
and the graphs hold come to the same bytes an edge within 0.5: the rest is pseudonymising's
own memory, which the worker has in its intake process).
Prints one JSON object: a row per checkpoint and the expiry figures.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from typing import Any

import orjson

from graph.aliases import AliasResolver
from graph.contract import Report
from graph.records import PartitionGraph, partition_of, resolution_records
from graph.rules import CrossRegionRule
from graph.window import RollingGraph
from streams.memory import freeze, release

__all__ = ["measure"]

WINDOW = 365 * 86400.0
START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
REGIONS = [f"region-{i:02d}" for i in range(48)]
PARTITIONS = 4


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _release() -> None:
    """Collect, then hand freed heap pages back to the OS, as the worker does."""
    gc.collect()
    release()


def reports(total: int, seed: int = 11) -> Any:
    """`total` synthetic reports in event-time order, all inside one window."""
    rng = random.Random(seed)
    step = (WINDOW * 0.9) / max(total, 1)
    actor = victims_left = 0
    for n in range(total):
        if victims_left == 0:
            actor += 1
            victims_left = 1
            while rng.random() < 0.6 and victims_left < 400:
                victims_left += 1
            signals = {"device_id": f"s_{actor // 2 if actor % 8 == 0 else actor:020x}"}
            offender = f"o_{actor:031x}"
        victims_left -= 1
        yield Report(
            f"chirp-{n:07d}", "chirp", START + n * step, "harassment", offender,
            f"v_{n:020x}", REGIONS[rng.randrange(len(REGIONS))], signals,
        )  # fmt: skip


def measure(checkpoints: list[int]) -> dict[str, Any]:
    rule = CrossRegionRule()
    _release()
    empty = rss_bytes()
    resolver = AliasResolver(b"scaling", 20, window_seconds=WINDOW)
    graphs = [PartitionGraph(RollingGraph(WINDOW, rule)) for _ in range(PARTITIONS)]
    rows: list[dict[str, Any]] = []
    alerts = before = 0
    started = time.perf_counter()
    for fed, report in enumerate(reports(max(checkpoints)), start=1):
        resolution = resolver.resolve(report)
        queue = resolution_records(resolution, report.to_row())
        while queue:
            key, record = queue.pop(0)
            handled = graphs[partition_of(key, PARTITIONS)].handle(key, record, 0.0)
            alerts += len(handled.alerts)
            queue += handled.sends
        if fed % 50_000 == 0:
            freeze()  # as the worker does every 10 s (streams/memory.py)
        if fed in checkpoints:
            elapsed = time.perf_counter() - started
            _release()
            live = sum(graph.graph.live_edges for graph in graphs)
            used = rss_bytes() - empty
            rows.append({
                "reports": fed,
                "live_edges": live,
                "us_per_report": round(elapsed / (fed - before) * 1e6, 2),
                "reports_per_s": round((fed - before) / elapsed),
                "rss_mb": round(rss_bytes() / 2**20, 1),
                "bytes_per_edge": round(used / live) if live else None,
            })  # fmt: skip
            print(orjson.dumps(rows[-1]).decode(), file=sys.stderr, flush=True)
            before, started = fed, time.perf_counter()
    # Slide the window past everything: a report a window later on every partition.
    late_partitions: set[int] = set()
    for n in range(10_000):
        if len(late_partitions) == PARTITIONS:
            break
        late = Report(f"late-{n}", "chirp", START + 2 * WINDOW, "other", f"late-{n}",
                      f"late-victim-{n}", REGIONS[0], {})  # fmt: skip
        for key, record in resolution_records(resolver.resolve(late), late.to_row()):
            late_partitions.add(partition_of(key, PARTITIONS))
            graphs[partition_of(key, PARTITIONS)].handle(key, record, 0.0)
    # Expiry and retention trail the watermark; the worker's timer catches them up in
    # slices (streams/app.py), as this does.
    while resolver.forget_some() | any([g.graph.expire_some(1_000) for g in graphs]):
        pass
    _release()
    return {
        "checkpoints": rows,
        "alerts": alerts,
        "empty_rss_mb": round(empty / 2**20, 1),
        "after_expiry_rss_mb": round(rss_bytes() / 2**20, 1),
        "after_expiry_live_edges": sum(graph.graph.live_edges for graph in graphs),
        "resolver_accounts": resolver.accounts,
    }


def main(argv: list[str]) -> int:
    checkpoints = sorted(int(float(arg)) for arg in argv) or [100_000, 1_000_000]
    print(orjson.dumps(measure(checkpoints)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
