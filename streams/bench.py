"""`make bench`: the real pipeline on the embedded broker, beside the raw-consumer ceiling.

Every figure comes from one run on one machine. Throughput is also given as a ratio to the
aiokafka consume+decode ceiling measured in the same run, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from graph.contract import partition_key
from graph.pipeline import Pipeline
from graph.rules import CrossRegionRule
from streams.broker import EmbeddedBroker
from streams.kafka import create_topics, read_partitions
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


def peer_rate(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """The Quix Streams baseline (streams/peer.py), in its own process, on the same topic."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.peer", bootstrap, topic, str(count)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the Quix Streams baseline failed:\n{result.stderr[-2000:]}")
    return dict(orjson.loads(result.stdout.strip().splitlines()[-1]))


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
        env = dict(os.environ) | {
            "LINKWATCH_BOOTSTRAP": settings.bootstrap,
            "LINKWATCH_NAMESPACE": settings.namespace,
            "LINKWATCH_PARTITIONS": str(settings.partitions),
            "LINKWATCH_DATA_DIR": str(settings.data_dir),
            "LINKWATCH_WEB_PORT": str(self.port),
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
        values = self.metrics()
        return sum(v for k, v in values.items() if k.startswith("linkwatch_reports_total"))

    def rss_bytes(self, field: str = "VmRSS") -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) * 1024 if match else 0

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


def end_to_end(worker: WorkerProcess, expected: int, timeout: float) -> float:
    """Reports/s from the first processed report to the last (startup and join excluded)."""
    first_at = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = worker.processed()
        now = time.perf_counter()
        if first_at is None and done > 0:
            first_at, first_done = now, done
        if done >= expected and first_at is not None:
            return (done - first_done) / max(now - first_at, 1e-9)
        time.sleep(0.1)
    raise TimeoutError(f"pipeline processed {worker.processed()} of {expected}")


async def alert_latency(
    settings: Settings, cases: int, rate: float, label: str = "latency"
) -> list[float]:
    """Send `cases` three-region cases at `rate` reports/s; time each completing report's alert."""
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
        # Past the stream's newest events, so the latency cases are inside the window.
        moment = datetime(2027, 6, 1, tzinfo=UTC)
        for case in range(cases):
            account = f"{label}-{case}"
            for i, region in enumerate(("north", "south", "east")):
                report = {
                    "report_id": f"lat-{case}-{i}",
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


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--latency-cases", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/result.json"))
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="linkwatch-bench-"))
    with EmbeddedBroker(free_port(), log=workdir / "tansu.log") as broker:
        messages = stream(args.reports)
        settings = Settings(
            bootstrap=broker.bootstrap, namespace="bench", data_dir=workdir / "data"
        )
        create_topics(settings)
        produce_rate = asyncio.run(produce(settings.bootstrap, settings.reports_topic, messages))
        ceiling_rate = asyncio.run(
            ceiling(settings.bootstrap, settings.reports_topic, len(messages))
        )
        in_process = no_broker_rate(messages)
        peer = peer_rate(settings.bootstrap, settings.reports_topic, len(messages))

        # The empty worker's RSS, on topics of its own, is the baseline for bytes per edge.
        idle_settings = replace(settings, namespace="bench-idle", data_dir=workdir / "idle")
        create_topics(idle_settings)
        idle = WorkerProcess(idle_settings, workdir / "idle.log")
        idle.wait_ready()
        time.sleep(2)
        idle_rss = idle.rss_bytes()
        idle.stop()

        worker = WorkerProcess(settings, workdir / "worker.log")
        try:
            pipeline_rate = end_to_end(worker, len(messages), timeout=1800)
            time.sleep(1)
            metrics = worker.metrics()
            live_edges = metrics.get("linkwatch_live_edges", 0.0)
            peak_rss = worker.rss_bytes("VmHWM")
            latencies = asyncio.run(alert_latency(settings, args.latency_cases, rate=150))
        finally:
            worker.stop()

    bytes_per_edge = (peak_rss - idle_rss) / live_edges if live_edges else float("nan")
    result: dict[str, Any] = {
        "reports": len(messages),
        "reports_per_s": round(pipeline_rate),
        "ceiling_per_s": round(ceiling_rate),
        "ratio": round(pipeline_rate / ceiling_rate, 4),
        "no_broker_per_s": round(in_process),
        "peer_per_s": round(peer["per_s"]),
        "vs_peer": round(pipeline_rate / peer["per_s"], 2),
        "producer_per_s": round(produce_rate),
        "p50_alert_latency_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_alert_latency_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_samples": len(latencies),
        "live_edges": int(live_edges),
        "bytes_per_edge": round(bytes_per_edge),
        "peak_rss_mb_per_1m_edges": round(bytes_per_edge * 1e6 / 2**20),
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
