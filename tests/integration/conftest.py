"""Integration fixtures: a real Tansu broker process and real `linkwatch worker` processes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from streams.broker import EmbeddedBroker
from streams.kafka import create_topics, read_partitions
from streams.settings import Settings

pytestmark = pytest.mark.integration
_namespaces = itertools.count(1)


class _AsFaust(RoundRobinPartitionAssignor):
    """A member may join the workers' group only under the protocol they use: Faust's."""

    name = "faust"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real broker for the session; a start failure fails the tests, it never skips them."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(free_port(), log=log) as running:
        yield running


class Worker:
    """A `linkwatch worker` process with its own environment and log file."""

    def __init__(self, env: dict[str, str], log: Path, web_port: int) -> None:
        self.env = env
        self.log = log
        self.web_port = web_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/healthz", timeout=1
            ) as r:
                return dict(orjson.loads(r.read()))
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def wait_owning(self, partitions: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            health = self.health()
            if health and len(health["partitions"]) == partitions:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker did not own {partitions} partitions:\n{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def http(
        self, method: str, path: str, key: str | None = None, body: bytes | None = None
    ) -> tuple[int, Any]:
        """A real HTTP call to this worker; JSON answers are decoded."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}", data=body, method=method
        )
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, data, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, data, kind = error.code, error.read(), error.headers
        if "json" in kind.get("Content-Type", ""):
            return status, orjson.loads(data)
        return status, data

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Owns its partitions and has read the shared state (keys, alerts, lifecycle)."""
        self.wait_owning(int(self.env["LINKWATCH_PARTITIONS"]), timeout)
        self.wait_ready_api(timeout)

    def wait_ready_api(self, timeout: float = 90.0) -> None:
        """The API answers: the shared state (keys, alerts, lifecycle) has been read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.http("GET", "/v1/whoami")[0] == 401:
                return
            time.sleep(0.2)
        raise AssertionError(f"the API did not become ready:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Deployment:
    """One test's own namespace (topics, consumer group), data dir and workers."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, **overrides: Any) -> None:
        self.settings = Settings(
            bootstrap=broker.bootstrap,
            namespace=f"lwtest{os.getpid()}n{next(_namespaces)}",
            data_dir=tmp_path / "data",
            partitions=overrides.pop("partitions", 4),
            **overrides,
        )
        self.tmp_path = tmp_path
        self.workers: list[Worker] = []
        create_topics(self.settings)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LINKWATCH_BOOTSTRAP=self.settings.bootstrap,
            LINKWATCH_NAMESPACE=self.settings.namespace,
            LINKWATCH_DATA_DIR=str(self.settings.data_dir),
            LINKWATCH_PARTITIONS=str(self.settings.partitions),
            LINKWATCH_MIN_REGIONS=str(self.settings.min_regions),
            LINKWATCH_WINDOW_DAYS=str(self.settings.window_days),
        )
        return env

    def worker(self, **extra_env: str) -> Worker:
        port = free_port()
        env = self.env() | {"LINKWATCH_WEB_PORT": str(port)} | extra_env
        worker = Worker(env, self.tmp_path / f"worker{len(self.workers)}.log", port)
        self.workers.append(worker)
        return worker.start()

    def key(self, role: str, platform: str | None = None, name: str | None = None) -> str:
        """Mint an API key with the real CLI; the key is the last line it prints."""
        args = ["keys", "create", "--role", role]
        args += ["--platform", platform] if platform else []
        args += ["--name", name] if name else []
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def push(self, messages: list[bytes], name: str = "reports.jsonl") -> str:
        path = self.tmp_path / name
        path.write_bytes(b"".join(message + b"\n" for message in messages))
        result = self.cli("push", str(path))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def alerts(self) -> list[dict[str, Any]]:
        result = self.cli("alerts", "--json")
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    def wait_for_alerts(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until at least `count` alerts exist (a wait for a condition, not a timing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alerts = self.alerts()
            if len(alerts) >= count:
                return alerts
            time.sleep(0.5)
        raise AssertionError(
            f"expected {count} alerts, have {self.alerts()}\n"
            + "\n".join(worker.tail() for worker in self.workers)
        )

    def read(self, topic: str) -> list[Any]:
        async def collect() -> list[Any]:
            return [
                record
                async for records in read_partitions(self.settings.bootstrap, topic)
                for record in records
            ]

        return asyncio.run(collect())

    def rewind(self, topic: str) -> None:
        """Set the workers' committed offsets on `topic` back to 0, as if they had committed
        none of it (as a SIGKILL before the first commit leaves them). No worker may run:
        this joins the workers' consumer group, and the broker gives it every partition
        once the last worker's session has timed out."""

        async def commit() -> None:
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.settings.namespace,  # Faust's group is the app id, the namespace
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                partition_assignment_strategy=(_AsFaust,),
            )
            await consumer.start()
            try:
                deadline = time.monotonic() + 60
                while len(consumer.assignment()) < self.settings.partitions:
                    assert time.monotonic() < deadline, "the group never came to this member"
                    await consumer.getmany(timeout_ms=500)
                await consumer.commit(dict.fromkeys(consumer.assignment(), 0))
            finally:
                await consumer.stop()

        asyncio.run(commit())

    def close(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                worker.stop()


@pytest.fixture
def deployment(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(broker, tmp_path)
    yield deployed
    deployed.close()
