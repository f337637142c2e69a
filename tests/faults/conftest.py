"""Fault-injection fixtures: the integration broker and workers, deployments whose runs can be
compared run against run, and the uninterrupted reference run a faulty run must equal."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streams.broker import EmbeddedBroker
from streams.kafka import create_topics, topic_configs
from streams.settings import Settings
from streams.simulate import simulate
from tests.integration import conftest as integration
from tests.integration.conftest import Deployment, Worker, free_port

__all__ = ["Deployment", "Worker", "free_port"]

# The integration suite's fixtures (its session broker, a deployment), found here by name.
broker = integration.broker
deployment = integration.deployment

# The simulated stream every comparison test uses: 24 serial actors in all five linkage
# shapes, brigades, near-misses, hubs, redelivered and malformed lines; about 3,800 lines.
STREAM_SEED = 11
STREAM_SCALE = 6
# A per-process counter of our own, so namespaces never collide with tests/integration's.
_namespaces = itertools.count(1)


def fault_random(what: str) -> random.Random:
    """A seeded random source for fault points; the seed is printed, and LINKWATCH_FAULT_SEED
    replays a failing run."""
    seed = int(os.environ.get("LINKWATCH_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"{what}: fault seed {seed} (rerun with LINKWATCH_FAULT_SEED={seed})")
    return random.Random(seed)


class OrderedDeployment(Deployment):
    """A deployment whose reports topic has one partition; every other topic has `partitions`.

    With several input partitions, the order in which the one resolver sees reports depends
    on how fetches interleave, and so do actor ids (the first account seen names the actor)
    and alert ids: two uninterrupted runs over one file differ. With one input partition
    the resolver sees the file's order in every run, so a faulty run can be compared with a
    reference run alert for alert, while the graph stage still has `partitions` partitions
    for kills, merges and rebalances to move. The watermark counts LINKWATCH_PARTITIONS
    input partitions; the three that never send hold it back for the first 10,000 reports
    (graph/watermark.py), so streams here stay below that and nothing expires. Reports sent
    again after a kill count once, as in the reference run.
    """

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, partitions: int = 4) -> None:
        self.settings = Settings(
            bootstrap=broker.bootstrap,
            namespace=f"lwfault{os.getpid()}n{next(_namespaces)}",
            data_dir=tmp_path / "data",
            partitions=partitions,
        )
        self.tmp_path = tmp_path
        self.workers: list[Worker] = []
        reports = self.settings.reports_topic
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            configs = topic_configs(self.settings)[reports]
            admin.create_topics([NewTopic(reports, 1, 1, topic_configs=configs)])
        finally:
            admin.close()
        create_topics(self.settings)  # the others; the reports topic is left as it is


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker for this test alone, on a fixed port, so that it can restart on that port
    or stop under its workers."""
    with EmbeddedBroker(free_port(), log=tmp_path / "tansu.log") as running:
        yield running


def push_in_background(
    deployment: Deployment, lines: list[bytes], name: str
) -> subprocess.Popen[bytes]:
    """`linkwatch push` of `lines` as a process of its own; the caller waits for it."""
    path = deployment.tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "push", str(path)],
        env=deployment.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- reading a worker -----------------------------------------------------------------------


def metric_values(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the worker's /metrics, keyed by (name, sorted labels)."""
    values = {}
    for family in text_string_to_metric_families(worker.metrics()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def processed(worker: Worker) -> int:
    """Messages this worker process finished: graph outcomes plus intake rejections."""
    try:
        values = metric_values(worker)
    except OSError:
        return 0  # not serving yet
    return int(sum(v for (name, _), v in values.items() if name == "linkwatch_reports_total"))


def lagging(worker: Worker) -> dict[str, float]:
    """`topic/partition` -> messages behind, for the partitions with a lag; {} when caught up."""
    values = metric_values(worker)
    return {
        f"{dict(labels)['topic']}/{dict(labels)['partition']}": value
        for (name, labels), value in values.items()
        if name == "linkwatch_consumer_lag" and value > 0
    }


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    poll: float = 0.5,
    alive: Sequence[Worker] = (),
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds, or at
    once, with its log, when one of the `alive` workers has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in alive:
            assert worker.process is not None
            if worker.process.poll() is not None:
                raise AssertionError(
                    f"a worker exited ({worker.process.returncode}) while waiting for {what}:"
                    f"\n{worker.tail(40)}"
                )
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def committed_offsets(settings: Settings, topics: Sequence[str]) -> dict[str, int | None]:
    """`topic/partition` -> the consumer group's committed offset (read, without joining)."""

    async def read() -> dict[str, int | None]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=settings.namespace,  # Faust's group is the app id, the namespace
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            found: dict[str, int | None] = {}
            for topic in topics:
                for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                    offset = await consumer.committed(TopicPartition(topic, partition))
                    found[f"{topic}/{partition}"] = offset
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def end_offsets(deployment: Deployment, topics: Sequence[str]) -> dict[str, int]:
    """`topic/partition` -> one past its last message, counted by reading the topic (Tansu
    can report a partition's end too low; README, "Reading to the end")."""
    ends: dict[str, int] = {}
    for topic in topics:
        for record in deployment.read(topic):
            key = f"{topic}/{record.partition}"
            ends[key] = max(ends.get(key, 0), record.offset + 1)
    return ends


# -- the final state of a run, and how two of them differ -----------------------------------


@dataclass
class View:
    """What a run ended with, minus wall-clock times: alerts by id, the graph, rejections."""

    alerts: dict[str, dict[str, Any]]
    alert_ids_on_topic: list[str]
    nodes: dict[str, dict[str, Any]]
    edges: dict[tuple[str, str], dict[str, Any]]
    rejected: set[bytes]


def read_view(deployment: Deployment, worker: Worker, analyst_key: str) -> View | None:
    """The run's alerts (the topic itself), snapshot and rejections; None if the snapshot
    is not available yet (a worker that just left is still in the directory)."""
    try:
        status, snapshot = worker.http("GET", "/v1/graph/snapshot", analyst_key)
    except (OSError, urllib.error.URLError):
        return None
    if status != 200:
        return None
    listed = deployment.cli("alerts", "--json")
    if listed.returncode != 0:
        return None  # e.g. the topic is not there (yet)
    alerts = [orjson.loads(line) for line in listed.stdout.splitlines()]
    try:
        rejected = deployment.read(deployment.settings.rejected_topic)
    except LookupError:
        return None  # the topic is not there (yet)
    return View(
        alerts={a["alert_id"]: {k: v for k, v in a.items() if k != "raised_at"} for a in alerts},
        alert_ids_on_topic=[a["alert_id"] for a in alerts],
        nodes={node["id"]: node for node in snapshot["nodes"]},
        edges={(edge["source"], edge["target"]): edge for edge in snapshot["edges"]},
        rejected={record.value for record in rejected},
    )


def levels_agree(view: View) -> bool:
    """Every actor in the snapshot shows the highest serial alert level on the topic."""
    highest: dict[str, int] = {}
    for alert in view.alerts.values():
        if alert.get("kind") == "serial":
            node = f"actor:{alert['actor_id']}"
            highest[node] = max(highest.get(node, 0), int(alert["level"]))
    return all(
        view.nodes[node].get("level") == level for node, level in highest.items()
        if node in view.nodes
    )  # fmt: skip


def differences(expected: View, actual: View) -> list[str]:
    """Readable differences between two runs; empty when they ended the same."""
    found = []
    for what, want, have in (
        ("alert", expected.alerts, actual.alerts),
        ("node", expected.nodes, actual.nodes),
        ("edge", expected.edges, actual.edges),
    ):
        want_keys, have_keys = set(want), set(have)  # type: ignore[arg-type]
        found += [f"{what} missing: {key}" for key in sorted(want_keys - have_keys, key=str)]
        extra = sorted(have_keys - want_keys, key=str)
        found += [f"{what} not in the reference: {key}" for key in extra]
        for key in sorted(want_keys & have_keys, key=str):
            fields = sorted(
                name
                for name in set(want[key]) | set(have[key])  # type: ignore[index]
                if want[key].get(name) != have[key].get(name)  # type: ignore[index]
            )
            found += [
                f"{what} {key}: {name} is {have[key].get(name)!r}, "  # type: ignore[index]
                f"reference {want[key].get(name)!r}"  # type: ignore[index]
                for name in fields
            ]
    duplicated = [i for i, n in Counter(actual.alert_ids_on_topic).items() if n > 1]
    found += [f"alert published more than once: {alert_id}" for alert_id in duplicated]
    lost = expected.rejected - actual.rejected
    found += [f"rejection lost: {value[:60]!r}" for value in sorted(lost)]
    return found


def converge(
    deployment: Deployment,
    worker: Callable[[], Worker],
    analyst_key: str,
    reference: View,
    timeout: float = 120.0,
) -> View:
    """Wait until the run equals the reference and its consumers are caught up; on timeout,
    fail with how it differs. `worker` names the worker to ask (it may change)."""
    deadline = time.monotonic() + timeout
    view: View | None = None
    while time.monotonic() < deadline:
        current = worker()
        assert current.process is not None
        if current.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{current.tail(60)}")
        view = read_view(deployment, current, analyst_key)
        if view is not None and not differences(reference, view) and not lagging(current):
            return view
        time.sleep(1.0)
    report = differences(reference, view) if view is not None else ["no snapshot"]
    current = worker()
    tails = "\n".join(w.tail(25) for w in deployment.workers[-2:])
    raise AssertionError(
        f"{len(report)} differences from the reference run:\n  "
        + "\n  ".join(report[:40])
        + f"\nthe worker has processed {processed(current)}, lags {lagging(current)}"
        + f"\n{what_the_resolver_saw(deployment)}\n{notable_lines(deployment)}\n{tails}"
    )


def what_the_resolver_saw(deployment: Deployment) -> str:
    """How many rows the identity topic holds, for how many reports: a crash makes intake
    send some again, and how they count was the cause of one flake (graph/watermark.py)."""
    try:
        records = deployment.read(deployment.settings.identity_topic)
        rows = [row for record in records for row in orjson.loads(record.value or b"[]")
                if isinstance(row, list)]  # fmt: skip
    except Exception as exc:  # a diagnostic: never hide the failure it explains
        return f"the identity topic could not be read: {exc!r}"
    return f"the identity topic holds {len(rows)} rows for {len({r[0] for r in rows})} reports"


def notable_lines(deployment: Deployment, limit: int = 30) -> str:
    """Every worker's warnings, errors and replays, in order: what the last lines of the
    last two workers' logs (below) do not show."""
    found = []
    for number, worker in enumerate(deployment.workers):
        for line in worker.log.read_text(errors="replace").splitlines():
            if "signal hub" in line:
                continue  # the stream has hubs on purpose: expected in every run
            if any(mark in line for mark in ("WARNING", "ERROR", "CRITICAL", "replayed")):
                found.append(f"worker {number}: {line[:200]}")
    return "\n".join([f"{len(found)} notable log lines, the last {limit}:", *found[-limit:]])


# -- the stream, and the uninterrupted reference run -------------------------------------


@dataclass(frozen=True)
class Stream:
    path: Path
    lines: list[bytes]

    def chunks(self, rng: random.Random, count: int) -> list[list[bytes]]:
        """The stream cut at `count - 1` random places, in order."""
        cuts = sorted(rng.sample(range(1, len(self.lines)), count - 1))
        edges = [0, *cuts, len(self.lines)]
        return [self.lines[a:b] for a, b in itertools.pairwise(edges)]


@pytest.fixture(scope="session")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    out = tmp_path_factory.mktemp("stream")
    simulate(out, STREAM_SEED, STREAM_SCALE)
    path = out / "reports.jsonl"
    return Stream(path, [line for line in path.read_bytes().splitlines() if line.strip()])


class ReferenceRun:
    """One worker, never disturbed, over the whole stream in a namespace of its own. It runs
    in a thread from the moment a test asks for it, alongside that test's own deployment.
    Its worker stays up until `close()`: a test may take the finished run further."""

    def __init__(
        self, broker: EmbeddedBroker, tmp_path: Path, stream: Stream, ordered: bool = True
    ) -> None:
        self.deployment = (OrderedDeployment if ordered else Deployment)(broker, tmp_path)
        self.stream = stream
        self.analyst = ""
        self._view: View | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.analyst = self.deployment.key("analyst", name="reference analyst")
            worker = self.deployment.worker()
            worker.wait_ready()
            self.deployment.push(self.stream.lines)
            total = len(self.stream.lines)
            wait_until(lambda: processed(worker) >= total, 120, "the reference run")
            wait_until(lambda: not lagging(worker), 60, "the reference run to catch up")
            # The snapshot's alert levels come from the worker's own reading of the alerts
            # topic, which can trail the topic by a moment: wait until they agree.
            views: list[View | None] = []

            def settled() -> bool:
                views.append(read_view(self.deployment, worker, self.analyst))
                return views[-1] is not None and levels_agree(views[-1])

            wait_until(settled, 60, "the reference run's snapshot to show its alerts")
            view = views[-1]
            assert view is not None
            assert len(view.alert_ids_on_topic) == len(view.alerts), "reference duplicated"
            self._view = view
        except BaseException as error:  # reported by view(), in the test's thread
            self._error = error

    def view(self, timeout: float = 240.0) -> View:
        self._thread.join(timeout)
        if self._error is not None:
            raise AssertionError(f"the reference run failed: {self._error!r}") from self._error
        assert self._view is not None, "the reference run did not finish"
        return self._view

    def close(self) -> None:
        self._thread.join(60)
        self.deployment.close()


@pytest.fixture(scope="session")
def reference(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory, stream: Stream
) -> Iterator[ReferenceRun]:
    run = ReferenceRun(broker, tmp_path_factory.mktemp("reference"), stream)
    yield run
    run.close()
