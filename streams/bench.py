"""`make bench`: the real pipeline on the embedded broker, beside the raw-consumer ceiling.

Every figure comes from one run on one machine. Throughput is also given as a ratio to the
aiokafka consume+decode ceiling measured in the same run, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from graph import compiled
from graph.aliases import AliasResolver
from graph.contract import Report, parse_report, partition_key
from graph.pipeline import Pipeline
from graph.records import resolution_records
from graph.rules import CrossRegionRule
from graph.watermark import LowWatermark
from streams.broker import EmbeddedBroker
from streams.kafka import create_topics, read_partitions
from streams.offload import RENEW_EVERY, RENEW_IDLE
from streams.procstat import CpuMeter, children_of
from streams.settings import Settings
from streams.simulate import simulate


def stream(count: int, seed: int = 7) -> list[bytes]:
    """`count` lines of the simulator's stream (streams/simulate.py): mostly one-off
    offenders, local harassers, brigades, serial actors, 2% redelivered, 1% malformed."""
    scale = max(1, math.ceil(count / 600))
    with tempfile.TemporaryDirectory() as scratch:
        simulate(Path(scratch), seed, scale)
        lines = (Path(scratch) / "reports.jsonl").read_bytes().splitlines()
    return lines[:count]


def variant(lines: list[bytes], tag: str) -> list[bytes]:
    """The same stream as other people: report ids, accounts and signal values get a
    prefix, so a copy is new reports about new actors, not redeliveries."""
    prefix = tag.encode()
    out = []
    for line in lines:
        for field in (b'"report_id":"', b'"account":"', b'_hash":"', b'"device_id":"'):
            line = line.replace(field, field + prefix)
        out.append(line)
    return out


async def produce(bootstrap: str, topic: str, messages: list[bytes]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for message in messages:
            await producer.send(topic, message, key=partition_key(message))
        await producer.flush()
    finally:
        await producer.stop()
    return len(messages) / (time.perf_counter() - started)


async def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """Raw aiokafka getmany + orjson decode of every message: what the broker can feed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    # The stream's malformed lines fail to decode; trying is the cost.
                    with contextlib.suppress(orjson.JSONDecodeError):
                        orjson.loads(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def peer_rate(bootstrap: str, topic: str, count: int, broker_pid: int) -> dict[str, Any]:
    """The Quix Streams baseline (streams/peer.py), in its own process, on the same topic."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.peer", bootstrap, topic, str(count), str(broker_pid)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the Quix Streams baseline failed:\n{result.stderr[-2000:]}")
    peer = dict(orjson.loads(result.stdout.strip().splitlines()[-1]))
    # Its rate counts only if every report it read went through its state.
    if peer["messages"] != count or peer["stated"] != peer["reports"]:
        raise RuntimeError(f"the Quix Streams baseline stopped short: {peer}")
    # Its CPU, read at its first message and when it stopped, is set beside linkwatch's.
    if not (peer["cpu_s"] > 0 and peer["broker_cpu_s"] > 0):
        raise RuntimeError(f"the Quix Streams baseline's CPU was not read: {peer}")
    return peer


def no_broker_rate(messages: list[bytes]) -> float:
    pipeline = Pipeline(b"bench", 365 * 86400.0, CrossRegionRule())
    started = time.perf_counter()
    pipeline.feed(messages, now=0.0)
    return len(messages) / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.reports = f'topic="{settings.reports_topic}"'
        env = dict(os.environ) | {
            "LINKWATCH_BOOTSTRAP": settings.bootstrap,
            "LINKWATCH_NAMESPACE": settings.namespace,
            "LINKWATCH_PARTITIONS": str(settings.partitions),
            "LINKWATCH_DATA_DIR": str(settings.data_dir),
            "LINKWATCH_WEB_PORT": str(self.port),
            "LINKWATCH_INTAKE_PROCESSES": str(settings.intake_processes),
            "LINKWATCH_RESOLVER_PROCESS": "1" if settings.resolver_process else "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warn"],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            match = re.match(r"^(linkwatch_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
            if match:
                values[match.group(1)] = float(match.group(2))
        return values

    def processed(self) -> float:
        return self.progress()[1]

    def progress(self) -> tuple[bool, float]:
        """(whether it has fetched from the reports topic yet, reports through the graph)."""
        values = self.metrics()
        # The lag of a partition appears once the worker has fetched from it.
        fetched = any(k.startswith("linkwatch_consumer_lag{") and self.reports in k
                      for k in values)  # fmt: skip
        return fetched, sum(v for k, v in values.items() if k.startswith("linkwatch_reports_total"))

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """The worker's RSS and its child processes' (the resolver's state lives in one)."""
        return sum(self.rss_by_process(field).values())

    def rss_by_process(self, field: str = "VmRSS") -> dict[str, int]:
        """The RSS of the worker (`worker`) and of each of its child processes, by name."""
        found: dict[str, int] = {}
        pids = {"worker": self.process.pid} | children_of(self.process.pid)
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
                found[name] = int(match.group(1)) * 1024 if match else 0
        return found

    def started_children(self) -> int:
        """Child processes that have started (they name themselves then)."""
        return sum(not name.startswith("python") for name in children_of(self.process.pid))

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metrics():
                return
            if self.process.poll() is not None:
                raise RuntimeError("worker exited")
            time.sleep(0.2)
        raise TimeoutError("worker did not come up")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def end_to_end(
    worker: WorkerProcess, expected: int, timeout: float, meter: CpuMeter | None = None
) -> float:
    """Reports/s from the worker's first fetch of reports to its last report through the
    graph (startup and join excluded); `meter`, if given, measures the CPU each process
    spends over that same interval.

    The clock starts at the first fetch, not at the first report out of the graph: intake
    and the resolver run ahead of the graph, and on a small backlog intake had done most
    of its work before the graph's first report (its process showed 0.04 of a core)."""
    first_at = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fetched, done = worker.progress()
        now = time.perf_counter()
        if first_at is None and (fetched or done > 0):
            first_at, first_done = now, done
            if meter is not None:
                meter.start()
        if done >= expected and first_at is not None:
            if meter is not None:
                meter.stop()
            return (done - first_done) / max(now - first_at, 1e-9)
        time.sleep(0.1)
    raise TimeoutError(f"pipeline processed {worker.processed()} of {expected}")


def newest_event_time(messages: list[bytes]) -> datetime:
    """The newest `reported_at` among the valid reports in `messages`."""
    reports = (parse_report(message) for message in messages)
    return datetime.fromtimestamp(
        max(report.event_time for report in reports if isinstance(report, Report)), UTC
    )


async def alert_latency(
    settings: Settings, cases: int, rate: float, moment: datetime, label: str = "latency"
) -> list[float]:
    """Send `cases` three-region cases at `rate` reports/s, the first report of each dated
    `moment` (plus the case's number in seconds), the other two three and six days on;
    time each completing report's alert."""
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}

    async def watch() -> None:
        async for records in read_partitions(
            settings.bootstrap, settings.alerts_topic, follow=True
        ):
            for record in records:
                alert = orjson.loads(record.value)
                received.setdefault(alert["accounts"][0], time.time())

    watcher = asyncio.create_task(watch())
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=0)
    await producer.start()
    try:
        for case in range(cases):
            account = f"{label}-{case}"
            for i, region in enumerate(("north", "south", "east")):
                report = {
                    "report_id": f"{label}-{case}-{i}",
                    "platform": "chirp",
                    # Days apart: three episodes, as a serial actor's victims are.
                    "reported_at": (moment + timedelta(days=3 * i, seconds=case)).isoformat(),
                    "category": "harassment",
                    "offender": {"account": account},
                    "victim": {"account": f"lv-{case}-{i}", "region": region},
                }
                await producer.send_and_wait(
                    settings.reports_topic, orjson.dumps(report), key=account.encode()
                )
                if i == 2:
                    sent_at[f"chirp:{account}"] = time.time()
                await asyncio.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while not set(sent_at) <= set(received) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        watcher.cancel()
    return sorted(received[k] - sent_at[k] for k in sent_at if k in received)


async def _send_late(settings: Settings, per_partition: int) -> int:
    """Reports years after everything else, on every input partition (the watermark waits
    for the slowest) and for enough actors to reach every graph partition."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    sent = 0
    try:
        for partition in range(settings.partitions):
            for i in range(per_partition):
                report = {
                    "report_id": f"late-{partition}-{i}", "platform": "chirp",
                    "reported_at": "2031-01-01T00:00:00Z", "category": "other",
                    "offender": {"account": f"late-{partition}-{i}"},
                    "victim": {"account": f"late-victim-{partition}-{i}", "region": "kent"},
                }  # fmt: skip
                await producer.send_and_wait(
                    settings.reports_topic, orjson.dumps(report), partition=partition
                )
                sent += 1
    finally:
        await producer.stop()
    return sent


def rss_after_expiry(settings: Settings, worker: WorkerProcess) -> dict[str, int]:
    """Slide the window past everything the worker holds; the RSS of the worker and of each
    child process once the edges are gone and the worker is at rest.

    At rest: an intake process that had a burst holds its pages until the worker replaces
    it, once idle for RENEW_IDLE seconds and at most once every RENEW_EVERY
    (streams/offload.py), and so does the resolver process, whose state moves to a fresh
    one once it has shrunk (agents/resolve.py). Measured as soon as the edges were gone,
    the figure depended on where the last renewal fell: up to 37 MB more, an old intake
    process with the burst's pages beside its starting successor (session 16)."""
    before = worker.processed()
    pids = set(children_of(worker.process.pid).values())
    sent = asyncio.run(_send_late(settings, 16))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = worker.metrics()
        done = sum(v for k, v in metrics.items() if k.startswith("linkwatch_reports_total"))
        if done >= before + sent and metrics.get("linkwatch_live_edges", math.inf) <= sent:
            break
        time.sleep(0.5)
    # Until an intake process and the resolver process have been replaced (new pids,
    # started), or long enough that none is due: the renewals' limits, and the time a
    # fresh process takes to start.
    deadline = time.monotonic() + RENEW_EVERY + RENEW_IDLE + 15
    while time.monotonic() < deadline:
        children = children_of(worker.process.pid)
        fresh = {name.rstrip("0123456789") for name, pid in children.items() if pid not in pids}
        if {"lw-intake", "lw-resolve"} <= fresh and worker.started_children() == len(children):
            break
        time.sleep(0.5)
    time.sleep(2)
    return worker.rss_by_process()


def _megabytes(sizes: dict[str, int]) -> dict[str, float]:
    return {name: round(size / 2**20, 1) for name, size in sizes.items()}


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def settings_for(
    broker: EmbeddedBroker, workdir: Path, namespace: str, **overrides: Any
) -> Settings:
    settings = Settings(
        bootstrap=broker.bootstrap, namespace=namespace, data_dir=workdir / namespace,
        **overrides,
    )  # fmt: skip
    create_topics(settings)
    return settings


def run_pipeline(
    broker: EmbeddedBroker, settings: Settings, workdir: Path, workers: int, expected: int
) -> dict[str, Any]:
    """`workers` workers on reports already in the topic: rate, CPU per process, alerts."""
    started = [WorkerProcess(settings, workdir / f"{settings.namespace}-{i}.log")
               for i in range(workers)]  # fmt: skip
    try:
        for worker in started:
            worker.wait_ready()
        # Spawned, not yet started: a child names itself only after its imports, which can
        # take longer than the group's join, and the clock must start at the first fetch.
        _wait_children(started, settings)
        pids = {f"worker{i + 1}": w.process.pid for i, w in enumerate(started)}
        children = {child: i + 1 for i, w in enumerate(started)
                    for child in children_of(w.process.pid).values()}  # fmt: skip
        meter = CpuMeter(
            pids | {str(child): child for child in children} | {"broker": broker.pid},
            parents={str(child): started[i - 1].process.pid for child, i in children.items()},
        )
        total = _Total(started)
        rate = end_to_end(total, expected, timeout=3600, meter=meter)  # type: ignore[arg-type]
        # Each worker's child processes, named apart by now: where the worker's second core goes.
        names = {str(pid): f"worker{i}.{name}" for i, w in enumerate(started, 1)
                 for name, pid in children_of(w.process.pid).items()}  # fmt: skip
        meter.spent = {names.get(str(meter.pids[key]), key): spent
                       for key, spent in meter.spent.items()}  # fmt: skip
        time.sleep(1)
        metrics = started[0].metrics()
        return {
            "per_s": rate,
            "cores": meter.cores(),
            "idle_cores": meter.idle_cores(),
            "cpu_us_per_report": round(
                sum(v for k, v in meter.spent.items() if k != "broker") / max(expected, 1) * 1e6, 1
            ),
            "broker_cpu_us_per_report": round(meter.spent["broker"] / max(expected, 1) * 1e6, 1),
            "live_edges": sum(w.metrics().get("linkwatch_live_edges", 0.0) for w in started),
            "rss": started[0].rss_bytes(),
            "metrics": metrics,
            "workers": started,
        }
    except BaseException:
        for worker in started:
            worker.stop()
        raise


def _wait_children(workers: list[WorkerProcess], settings: Settings) -> None:
    """Until every worker's intake and resolver processes are there (spawned: started or
    not), for the CPU meter."""
    children = len(workers) * (settings.intake_processes + (1 if settings.resolver_process else 0))
    deadline = time.monotonic() + 60
    while (sum(len(children_of(worker.process.pid)) for worker in workers) < children
           and time.monotonic() < deadline):  # fmt: skip
        time.sleep(0.05)


class _Total:
    """Several workers' processed counts as one."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers

    def processed(self) -> float:
        return sum(worker.processed() for worker in self.workers)

    def progress(self) -> tuple[bool, float]:
        each = [worker.progress() for worker in self.workers]
        return any(fetched for fetched, _ in each), sum(done for _, done in each)


def alert_ids(settings: Settings) -> list[str]:
    """The alerts as `kind level accounts`. Not by alert id: an actor id names the account
    the resolver saw first, and with several input partitions which one that is depends on
    how fetches interleave, in two runs of one worker as much as with two workers
    (tests/faults compares ids exactly, on a one-partition input)."""

    async def collect() -> list[str]:
        return [
            f"{alert['kind']} {alert['level']} {','.join(alert['accounts'])}"
            async for records in read_partitions(settings.bootstrap, settings.alerts_topic)
            for record in records
            if (alert := orjson.loads(record.value))
        ]

    return sorted(asyncio.run(collect()))


def settled_alert_ids(settings: Settings, quiet: float = 3.0, timeout: float = 120) -> list[str]:
    """Alert ids once no new one has come for `quiet` seconds (merges can trail the input)."""
    previous: list[str] = []
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        current = alert_ids(settings)
        if current != previous:
            previous, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.5)
    return previous


def latency_phase(
    settings: Settings, args: argparse.Namespace, rate: float, moment: datetime, label: str
) -> list[float]:
    """Report-to-alert latency of `args.latency_cases` cases dated from `moment`, while new
    reports (copies of the bench's stream) are pushed at `rate` a second."""
    seconds = args.latency_cases * 3 / 20 + 5  # how long the latency cases take
    base = stream(min(args.reports, 200_000), seed=8)
    load = [line for i in range(1 + int(rate * seconds / len(base)))
            for line in variant(base, f"{label}-load{i}-")]  # fmt: skip
    pusher = background_load(settings, load[: int(rate * seconds)], rate)
    time.sleep(1)
    latencies = asyncio.run(alert_latency(settings, args.latency_cases, 20, moment, label))
    pusher.join(timeout=600)
    return latencies


def background_load(settings: Settings, messages: list[bytes], rate: float) -> threading.Thread:
    """Push `messages` at `rate` per second from a thread (the latency run's load)."""
    from streams.push import push_messages

    thread = threading.Thread(
        target=push_messages, args=(settings, messages), kwargs={"rate": rate}, daemon=True
    )
    thread.start()
    return thread


def scaling(checkpoints: list[int]) -> dict[str, Any]:
    """streams/scaling.py in its own process, with the worker's allocator (streams/memory.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.scaling", *map(str, checkpoints)],
        env=dict(os.environ) | {"PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"streams.scaling failed:\n{result.stderr[-2000:]}")
    return dict(orjson.loads(result.stdout.strip().splitlines()[-1]))


def resolver_rate(messages: list[bytes]) -> float:
    """Reports/s through the one-partition stage alone (watermark, aliases, routing): the
    stage no number of workers can spread, so it bounds a deployment."""
    reports = [r for r in map(parse_report, messages) if isinstance(r, Report)]
    rows = [[*report.to_row(), 0] for report in reports]
    resolver = AliasResolver(b"bench", 20, False, 365 * 86400.0)
    watermark = LowWatermark(4)
    started = time.perf_counter()
    for row, report in zip(rows, (Report.from_row(row) for row in rows), strict=True):
        resolution = resolver.resolve(report, watermark.observe(row[10], report.event_time))
        resolution_records(resolution, row[:10])
    return len(rows) / (time.perf_counter() - started)


def plot(curve: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = [row["live_edges"] for row in curve]
    figure, rate_axis = plt.subplots(figsize=(7, 4), dpi=110)
    rate_axis.plot(edges, [row["reports_per_s"] for row in curve], "o-", color="tab:blue")
    rate_axis.set_xscale("log")
    rate_axis.set_xlabel("live actor-victim edges")
    rate_axis.set_ylabel("reports/s (state stages, one core)", color="tab:blue")
    rate_axis.set_ylim(bottom=0)
    memory_axis = rate_axis.twinx()
    memory_axis.plot(edges, [row["rss_mb"] for row in curve], "s--", color="tab:red")
    memory_axis.set_ylabel("RSS (MB)", color="tab:red")
    memory_axis.set_yscale("log")
    rate_axis.set_title("linkwatch state: cost per report and memory against live edges")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--latency-cases", type=int, default=200)
    parser.add_argument("--replay-lines", type=int, default=10_000_000)
    parser.add_argument(
        "--curve", default="100000,300000,1000000,3000000,5000000,10000000",
        help="live-edge checkpoints for the cost and memory curve",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/result.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench/throughput-memory.png"))
    args = parser.parse_args(argv)
    checkpoints = [int(float(value)) for value in args.curve.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="linkwatch-bench-"))
    say = functools.partial(print, file=sys.stderr, flush=True)
    with EmbeddedBroker(free_port(), log=workdir / "tansu.log") as broker:
        messages = stream(args.reports)
        settings = settings_for(broker, workdir, "bench")
        say(f"producing {len(messages):,} reports")
        produce_rate = asyncio.run(produce(settings.bootstrap, settings.reports_topic, messages))
        say("ceiling: raw aiokafka consume + orjson decode")
        ceiling_rate = asyncio.run(
            ceiling(settings.bootstrap, settings.reports_topic, len(messages))
        )
        in_process = no_broker_rate(messages)
        resolver_only = resolver_rate(messages)
        say("peer: Quix Streams, same topic")
        peer = peer_rate(settings.bootstrap, settings.reports_topic, len(messages), broker.pid)

        # The empty worker's RSS (with its child processes), on topics of its own, is the
        # baseline for bytes per edge.
        idle_settings = settings_for(broker, workdir, "bench-idle")
        idle = WorkerProcess(idle_settings, workdir / "idle.log")
        idle.wait_ready()
        _wait_children([idle], idle_settings)
        deadline = time.monotonic() + 60  # and started: their RSS at rest
        while (idle.started_children() < len(children_of(idle.process.pid))
               and time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.1)
        time.sleep(2)
        idle_by_process = idle.rss_by_process()
        idle_rss = sum(idle_by_process.values())
        idle.stop()

        say("one worker, end to end")
        one = run_pipeline(broker, settings, workdir, 1, len(messages))
        worker = one["workers"][0]
        try:
            one_alerts = settled_alert_ids(settings)
            half = one["per_s"] / 2
            say(f"latency at half the sustainable rate ({half:,.0f} reports/s)")
            # Dated where the stream is, as live reports are: the watermark moves on by
            # days, not past the backlog.
            live = newest_event_time(messages) + timedelta(seconds=1)
            latencies = latency_phase(settings, args, half, live, "latency")
            say("latency again, the cases dated 18 months past the stream (the whole backlog "
                "expires meanwhile)")  # fmt: skip
            jumped = latency_phase(settings, args, half, live + timedelta(days=540), "jump")
            say("expiry: the window slides past everything")
            full_rss = worker.rss_bytes()
            expired = rss_after_expiry(settings, worker)
            expired_rss = sum(expired.values())
        finally:
            worker.stop()

        say("one worker in one process (no intake or resolver process)")
        alone_settings = settings_for(broker, workdir, "bench-alone", intake_processes=0,
                                      resolver_process=False)  # fmt: skip
        asyncio.run(produce(alone_settings.bootstrap, alone_settings.reports_topic, messages))
        alone = run_pipeline(broker, alone_settings, workdir, 1, len(messages))
        alone["workers"][0].stop()

        say("two workers, same input")
        pair_settings = settings_for(broker, workdir, "bench-pair")
        asyncio.run(produce(pair_settings.bootstrap, pair_settings.reports_topic, messages))
        two = run_pipeline(broker, pair_settings, workdir, 2, len(messages))
        try:
            two_alerts = settled_alert_ids(pair_settings)
        finally:
            for each in two["workers"]:
                each.stop()

        say(f"replay: linkwatch push of {args.replay_lines:,} lines into a running worker")
        replay = replay_run(broker, workdir, args.replay_lines)

    say(f"state scaling, in process, to {max(checkpoints):,} live edges")
    state = scaling(checkpoints)
    curve = state["checkpoints"]
    at_target = min(curve, key=lambda row: abs(row["live_edges"] - 5_000_000))
    plot(curve, args.plot)
    per_worker = one["per_s"]
    peak = 1e8 / 86400 * 3  # 10^8 reports a day, with a peak hour at 3x the mean
    result: dict[str, Any] = {
        "reports": len(messages),
        "reports_per_s": round(one["per_s"]),
        "ceiling_per_s": round(ceiling_rate),
        "ratio": round(one["per_s"] / ceiling_rate, 4),
        "peer_per_s": round(peer["per_s"]),
        "vs_peer": round(one["per_s"] / peer["per_s"], 2),
        "peer_reports_stated": peer["stated"],
        # The CPU a message cost the peer's process and the broker, beside linkwatch's
        # (`worker_cpu_us_per_report`: the worker and its child processes) from this run.
        "peer_cpu_us_per_report": round(peer["cpu_s"] / peer["messages"] * 1e6, 1),
        "peer_broker_cpu_us_per_report": round(peer["broker_cpu_s"] / peer["messages"] * 1e6, 1),
        "no_broker_per_s": round(in_process),
        "producer_per_s": round(produce_rate),
        "worker_cpu_us_per_report": one["cpu_us_per_report"],
        "broker_cpu_us_per_report": one["broker_cpu_us_per_report"],
        "cores_one_worker": one["cores"],
        # What the machine left idle over that interval, and over the peer's: the cores a
        # chain of processes waiting on each other does not use (README, "Performance").
        "idle_cores_one_worker": one["idle_cores"],
        "peer_idle_cores": peer["idle_cores"],
        "intake_processes": settings.intake_processes,
        "resolver_process": settings.resolver_process,
        "compiled_core": compiled(),
        # One worker in one process: no intake process, and the resolver in the worker.
        "no_intake_process_per_s": round(alone["per_s"]),
        "no_intake_process_cores": alone["cores"],
        "latency_load_per_s": round(one["per_s"] / 2),
        "p50_alert_latency_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_alert_latency_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_samples": len(latencies),
        "p50_alert_latency_after_jump_ms": round(percentile(jumped, 0.50) * 1000, 1),
        "p99_alert_latency_after_jump_ms": round(percentile(jumped, 0.99) * 1000, 1),
        "latency_cases": args.latency_cases,
        "two_workers_per_s": round(two["per_s"]),
        "cores_two_workers": two["cores"],
        "two_workers_same_alerts": one_alerts == two_alerts,
        "alerts": len(one_alerts),
        "alerts_two_workers": len(two_alerts),
        "alerts_only_one_side": sorted(set(one_alerts) ^ set(two_alerts))[:10],
        "resolver_stage_per_s": round(resolver_only),
        "workers_for_1e8_per_day": {
            "peak_reports_per_s": round(peak),
            "worker_per_s": round(per_worker),
            "workers": math.ceil(peak / per_worker) + 1,
            "resolver_headroom": round(resolver_only / peak, 1),
        },
        "replay": replay,
        "live_edges_e2e": int(one["live_edges"]),
        "bytes_per_edge_e2e": (
            round((one["rss"] - idle_rss) / one["live_edges"]) if one["live_edges"] else None
        ),
        "bytes_per_edge": at_target["bytes_per_edge"],
        "bytes_per_edge_at_live_edges": at_target["live_edges"],
        "state_curve": curve,
        "state_empty_rss_mb": state["empty_rss_mb"],
        "state_after_expiry_rss_mb": state["after_expiry_rss_mb"],
        "state_expiry_rss_ratio": round(state["after_expiry_rss_mb"] / state["empty_rss_mb"], 2),
        "worker_empty_rss_mb": round(idle_rss / 2**20, 1),
        "empty_rss_mb_by_process": _megabytes(idle_by_process),
        "worker_full_rss_mb": round(full_rss / 2**20, 1),
        "worker_after_expiry_rss_mb": round(expired_rss / 2**20, 1),
        "after_expiry_rss_mb_by_process": _megabytes(expired),
        "expiry_rss_ratio": round(expired_rss / idle_rss, 2),
        "plot": str(args.plot),
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key != "state_curve":
            print(f"{key:<{width}}  {value}")
    print("state curve (in process):")
    for row in curve:
        print(
            f"  {row['live_edges']:>10,} live edges  {row['us_per_report']:>6} us/report  "
            f"{row['reports_per_s']:>7,}/s  {row['rss_mb']:>8} MB  {row['bytes_per_edge']} B/edge"
        )
    print(f"written to {args.out} and {args.plot}")
    return 0


def replay_run(broker: EmbeddedBroker, workdir: Path, lines: int) -> dict[str, Any]:
    """`linkwatch push FILE` of `lines` lines while one worker consumes: is push faster?"""
    settings = settings_for(broker, workdir, "bench-replay")
    path = workdir / "replay.jsonl"
    base = stream(min(lines, 300_000), seed=100)
    with path.open("wb") as out:
        written = copy = 0
        while written < lines:
            chunk = variant(base[: lines - written], f"c{copy}-")
            out.write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
            copy += 1
    worker = WorkerProcess(settings, workdir / "replay-worker.log")
    try:
        worker.wait_ready()
        pushed = subprocess.run(
            [sys.executable, "-m", "streams.cli", "push", str(path)],
            env=dict(os.environ) | {"LINKWATCH_BOOTSTRAP": settings.bootstrap,
                                    "LINKWATCH_NAMESPACE": settings.namespace},
            capture_output=True, text=True, timeout=7200,
        )  # fmt: skip
        if pushed.returncode != 0:
            raise RuntimeError(f"linkwatch push failed: {pushed.stderr[-1000:]}")
        match = re.search(r"([\d,]+) reports in ([\d.]+)s", pushed.stderr + pushed.stdout)
        push_seconds = float(match.group(2)) if match else float("nan")
        done_during_push = worker.processed()
        pipeline_during_push = done_during_push / push_seconds
        remaining = end_to_end(worker, lines, timeout=7200)
    finally:
        worker.stop()
    return {
        "lines": lines,
        "push_per_s": round(lines / push_seconds),
        "pipeline_per_s_while_pushing": round(pipeline_during_push),
        "pipeline_per_s_after": round(remaining),
        "push_faster_than_pipeline": lines / push_seconds > pipeline_during_push,
    }


if __name__ == "__main__":
    sys.exit(main())
