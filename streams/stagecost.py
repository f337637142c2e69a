"""Instructions per report of each stage, counted by Valgrind: a figure this machine's noise
does not move.

On these machines one run's throughput differs from the next by up to 1.9x, so a change
worth a tenth of a stage cannot be seen in timings. The number of instructions a stage
executes for the same input is the same from run to run, so `make bench-instructions`
counts them (`valgrind --tool=cachegrind`) on the bench's stream:

- **validate**: intake's work, `validate_batch` over the raw report lines;
- **resolve**: the resolver's, `Resolvers.apply` over the identity messages;
- **graph**: the graph agent's, `orjson.loads` and `PartitionGraph.handle_entries` over the
  actor-reports messages, with the absorbs a merge sends handled on their partition.

Each stage runs on fresh state over the output of the stage before. A stage's count is
the difference between a run that does every stage once and a run that then does that
stage once more, so imports, the stream and setup cancel out. To compare two versions,
run it in each (a `git worktree` of the older commit, `make compile` there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agents.children import Resolvers, validate_batch
from graph.records import PartitionGraph
from graph.window import RollingGraph
from streams import bench
from streams.kafka import actor_partition
from streams.settings import Settings

__all__ = ["STAGES", "count", "main", "run_stages"]

STAGES = ("validate", "resolve", "graph")
PARTITIONS = 4
CHUNK = 2000  # reports per fetched batch, as a backlog delivers them


def run_stages(lines: list[bytes], again: str | None = None) -> dict[str, Any]:
    """Every stage once over `lines`, then `again` once more on fresh state; what came out."""
    settings = Settings(partitions=PARTITIONS)
    identity = _validate(settings, lines)
    packs = _resolve(settings, identity)
    alerts = _graph(settings, packs)
    if again == "validate":
        _validate(settings, lines)
    elif again == "resolve":
        _resolve(settings, identity)
    elif again == "graph":
        _graph(settings, packs)
    return {"identity_messages": len(identity), "packs": len(packs), "alerts": alerts}


def _validate(settings: Settings, lines: list[bytes]) -> list[bytes]:
    pseudonyms = settings.pseudonyms()
    identity: list[bytes] = []
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start : start + CHUNK]
        offsets = list(range(start, start + len(chunk)))
        identity += validate_batch(chunk, [0] * len(chunk), offsets, pseudonyms)[0]
    return identity


def _resolve(settings: Settings, identity: list[bytes]) -> list[tuple[int, bytes]]:
    resolvers = Resolvers(settings)
    resolvers.create(0, 1)
    packs: list[tuple[int, bytes]] = []
    for message in identity:
        packs += resolvers.apply(0, 1, message, False).packs
    return packs


def _graph(settings: Settings, packs: list[tuple[int, bytes]]) -> int:
    rule, reveal = settings.rule(), settings.pseudonyms().reveal
    graphs = [
        PartitionGraph(RollingGraph(settings.window_seconds, rule, reveal))
        for _ in range(PARTITIONS)
    ]
    now, alerts = time.time(), 0
    for partition, value in packs:
        handled, _ = graphs[partition].handle_entries(orjson.loads(value), now)
        alerts += len(handled.alerts)
        for key, absorb in handled.sends:
            onward = graphs[actor_partition(key, PARTITIONS)].handle(key, absorb, now)
            alerts += len(onward.alerts)
    return alerts


_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(cachegrind_output: str) -> int:
    """The program's total from cachegrind's summary (`I refs: 1,234`)."""
    found = _REFS.search(cachegrind_output)
    if found is None:
        raise ValueError("no instruction count in cachegrind's output")
    return int(found.group(1).replace(",", ""))


def _counted(reports: int, again: str | None) -> int:
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "streams.stagecost", "--child", "--reports", str(reports),
    ] + (["--again", again] if again else [])  # fmt: skip
    # Fixed string hashing: dict probes, and so instructions, do not vary between runs.
    environment = dict(os.environ, PYTHONHASHSEED="0")
    ran = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if ran.returncode != 0:
        raise RuntimeError(f"the counted run failed: {ran.stderr[-2000:]}")
    return instructions(ran.stderr)


def count(reports: int) -> dict[str, int]:
    """Instructions per report of each stage (see the module's docstring)."""
    base = _counted(reports, None)
    return {stage: (_counted(reports, stage) - base) // reports for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stagecost", description=__doc__)
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("bench/instructions.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--again", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lines = bench.stream(args.reports)
    if args.child:
        print(json.dumps(run_stages(lines, args.again)))
        return 0
    costs = count(args.reports)
    costs["all"] = sum(costs.values())
    print(f"instructions a report, {args.reports:,} reports of the bench's stream (cachegrind)")
    for stage, cost in costs.items():
        print(f"  {stage:<9} {cost:>9,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reports": args.reports, "per_report": costs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
