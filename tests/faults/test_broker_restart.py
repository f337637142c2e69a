"""The embedded broker restarts under a running worker and comes back empty: the worker
carries on by itself (it notices the new logs and restarts in place), and once the reports
are sent again (`linkwatch replay --all` for the HTTP intake's, the same file pushed again
for the rest) the alerts and the snapshot are a reference run's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.broker import EmbeddedBroker
from tests.factories import make_report
from tests.faults.conftest import (
    Deployment,
    ReferenceRun,
    Stream,
    Worker,
    converge,
    processed,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

REGIONS = ["norfolk", "suffolk", "kent", "devon", "essex"]


def serial_actor(name: str, regions: int) -> list[dict[str, Any]]:
    """One account with a victim in each of `regions` regions, ten days apart. With a single
    account the actor id, and so the alert ids, do not depend on how the input partitions
    interleave, so a run can be compared with a reference run alert for alert."""
    return [
        make_report(name, f"{name}-victim-{i}", REGIONS[i], at=timedelta(days=10 * i),
                    report_id=f"{name}-{i}")
        for i in range(regions)
    ]  # fmt: skip


def lines(reports: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(report) for report in reports]


def post_when_possible(worker: Worker, key: str, reports: list[dict[str, Any]]) -> None:
    """POST until the intake takes the reports: while the broker is away it may answer 5xx,
    or not answer while the worker restarts in place, and a platform retries."""
    answers: list[Any] = []

    def accepted() -> bool:
        try:
            status, answer = worker.http("POST", "/v1/reports", key, orjson.dumps(reports))
        except OSError as exc:  # refused or reset: the worker is restarting
            answers.append(repr(exc))
            return False
        answers.append((status, answer))
        # A 4xx would be the platform's fault, except a 401 for a key minted a moment ago
        # that the worker has not read yet.
        assert status < 400 or status >= 500 or status == 401, answer
        return status == 202 and answer["accepted"] == len(reports)

    wait_until(accepted, 60, f"the intake to accept (answers: {answers[-3:]})", alive=[worker])


def test_a_broker_restart_loses_nothing_that_can_be_sent_again(
    broker: EmbeddedBroker, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # Before the restart, three actors over the HTTP intake and three from a file; after it,
    # one more of each, while the recovery runs.
    before_http = [r for i in range(3) for r in serial_actor(f"http.{i}", 3 + i % 2)]
    before_file = [r for i in range(3) for r in serial_actor(f"file.{i}", 3 + i % 2)]
    after_http, after_file = serial_actor("http.after", 4), serial_actor("file.after", 3)
    everything = [*before_http, *before_file, *after_http, *after_file]
    for directory in ("reference", "run"):
        (tmp_path / directory).mkdir()
    stream = Stream(tmp_path / "everything.jsonl", lines(everything))
    reference = ReferenceRun(broker, tmp_path / "reference", stream, ordered=False)

    run = Deployment(own_broker, tmp_path / "run")
    platform = run.key("platform", platform="chirp", name="chirp intake")
    analyst = run.key("analyst", name="analyst")
    worker = run.worker()
    try:
        worker.wait_ready()
        post_when_possible(worker, platform, before_http)
        run.push(lines(before_file), name="before.jsonl")
        wait_until(
            lambda: processed(worker) >= len(before_http) + len(before_file),
            60,
            "the reports before the restart",
            alive=[worker],
        )
        run.wait_for_alerts(8)  # L3 for each actor, L4 for the two with four regions

        own_broker.stop()
        own_broker.start()  # the same port, nothing in it: no topics, no offsets, no data
        # The worker is left to itself (no `linkwatch topics`, no restart). The operator
        # does what the README says: re-send what the broker lost and mint the API keys
        # again (they were on the broker too); the platforms go on sending.
        replay = run.cli("replay", "--all")
        assert replay.returncode == 0, replay.stderr
        assert f"re-sent {len(before_http)} reports" in replay.stdout, replay.stdout
        run.push(lines(before_file), name="before.jsonl")
        platform = run.key("platform", platform="chirp", name="chirp intake")
        analyst = run.key("analyst", name="analyst")
        post_when_possible(worker, platform, after_http)
        run.push(lines(after_file), name="after.jsonl")

        converge(run, lambda: worker, analyst, reference.view(), timeout=90)
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
    finally:
        run.close()
        reference.close()
