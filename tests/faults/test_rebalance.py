"""A second worker joins mid-stream and leaves again: the alerts and the graph end as one
undisturbed worker's do."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from tests.faults.conftest import (
    OrderedDeployment,
    ReferenceRun,
    Stream,
    Worker,
    converge,
    fault_random,
    processed,
    push_in_background,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def owned(worker: Worker) -> set[int]:
    return set((worker.health() or {}).get("partitions", []))


@pytest.mark.parametrize("leave", ["stop", "kill"])
def test_a_worker_joining_and_leaving_mid_stream_changes_no_alert(
    broker: EmbeddedBroker, tmp_path: Path, stream: Stream, reference: ReferenceRun, leave: str
) -> None:
    rng = fault_random(f"rebalance ({leave})")
    run = OrderedDeployment(broker, tmp_path)
    partitions = set(range(run.settings.partitions))
    analyst = run.key("analyst", name="analyst")
    first_chunk, joining, shared, leaving = stream.chunks(rng, 4)
    first = run.worker()
    try:
        pushers = [push_in_background(run, first_chunk, "first.jsonl")]
        target = rng.randint(1, len(first_chunk))
        wait_until(
            lambda: processed(first) >= target, 120, "the first worker to process", alive=[first]
        )

        second = run.worker()
        pushers.append(push_in_background(run, joining, "while-joining.jsonl"))
        wait_sharing(first, second, partitions)
        pushers.append(push_in_background(run, shared, "while-shared.jsonl"))
        wait_until(
            lambda: processed(second) > 0, 60, "the second worker to process", alive=[first, second]
        )

        print(f"second worker {leave}: it had processed {processed(second)} messages")
        if leave == "stop":
            assert second.stop() == 0
        else:
            second.kill()
        pushers.append(push_in_background(run, leaving, "while-leaving.jsonl"))
        assert [pusher.wait(60) for pusher in pushers] == [0, 0, 0, 0]
        wait_until(
            lambda: owned(first) == partitions, 120, "the first worker to own all", alive=[first]
        )
        converge(run, lambda: first, analyst, reference.view())
    finally:
        run.close()


def wait_sharing(first: Worker, second: Worker, partitions: set[int]) -> None:
    """Until each worker owns some partitions and together, without overlap, all."""
    wait_until(
        lambda: owned(first) | owned(second) == partitions and owned(first).isdisjoint(
            owned(second)) and bool(owned(first)) and bool(owned(second)),
        120,
        "the two workers to share the partitions",
        alive=[first, second],
    )  # fmt: skip


def test_every_partition_is_queryable_right_after_a_rebalance(reference: ReferenceRun) -> None:
    """The reference run, finished and idle, gets a second worker. No report arrives after
    the rebalance: the graphs of both workers must be there without waiting for one."""
    view = reference.view()
    run = reference.deployment
    partitions = set(range(run.settings.partitions))
    first = run.workers[0]
    second = run.worker()
    wait_sharing(first, second, partitions)
    converge(run, lambda: first, reference.analyst, view, timeout=30)
