"""State every worker keeps in step with a topic it reads from the start: keys, alerts, the
alert lifecycle, and the directory of live workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from streams.kafka import read_partitions

__all__ = ["DIRECTORY_TTL", "FOLLOW_FETCH_WAIT_MS", "Directory", "Followed"]

log = logging.getLogger(__name__)

DIRECTORY_TTL = 15.0  # seconds after its last announcement that a worker counts as gone

# How long the broker may hold a follower's empty fetch. Every fetch costs, data or not:
# about 1.1 ms of Tansu's CPU and 0.75 ms of the worker's (measured on an empty topic). At
# the pipeline's 25 ms (streams/transport.py) a worker's four followers made about 130
# fetches a second when idle: 0.16 of a core in the broker and 0.07 in the worker, for
# topics that change a few times a minute. On Apache Kafka a waiting fetch returns as soon
# as a record arrives, so the longer wait costs nothing there; on Tansu a followed record
# arrives about 53 ms after it was produced instead of 12 ("Performance", change 30).
FOLLOW_FETCH_WAIT_MS = 250


class Followed:
    """Applies every record of `topic`, in order, to `apply`; `ready` once caught up."""

    def __init__(self, bootstrap: str, topic: str, apply: Callable[[dict[str, Any]], object]):
        self.bootstrap = bootstrap
        self.topic = topic
        self.apply = apply
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async for records in read_partitions(
            self.bootstrap,
            self.topic,
            follow=True,
            caught_up=self.ready,
            fetch_wait_ms=FOLLOW_FETCH_WAIT_MS,
        ):
            for record in records:
                try:
                    self.apply(orjson.loads(record.value))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    # Only linkwatch writes these topics; skip a bad record, never stop.
                    log.error("skipped a bad record on %s: %s", self.topic, type(exc).__name__)


class Directory:
    """Which worker serves which actor-reports partitions, from their announcements."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._workers: dict[str, dict[str, Any]] = {}

    def apply(self, record: dict[str, Any]) -> None:
        self._workers[str(record["worker_id"])] = record

    def live(self, now: float | None = None) -> list[dict[str, Any]]:
        moment = time.time() if now is None else now
        return [w for w in self._workers.values() if moment - float(w["at"]) < DIRECTORY_TTL]

    def owner(self, partition: int) -> dict[str, Any] | None:
        """The live worker that most recently announced `partition`."""
        owners = [w for w in self.live() if partition in w["partitions"]]
        return max(owners, key=lambda w: float(w["at"]), default=None)
