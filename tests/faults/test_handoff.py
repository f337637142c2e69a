"""The local hand-off (agents/replay.py: `PartitionedState.offer`) is only a shortcut: a run
without it ends with the same alerts and graph as the reference run, which has it on and
used it on both topics a worker produces to and consumes."""

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
    metric_values,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def handoffs(worker: Worker) -> dict[str, float]:
    """topic -> messages the worker applied from its own sends (linkwatch_local_handoffs)."""
    return {
        dict(labels)["topic"]: value
        for (name, labels), value in metric_values(worker).items()
        if name == "linkwatch_local_handoffs_total"
    }


def outcomes(worker: Worker) -> dict[str, float]:
    """Reports by outcome (linkwatch_reports): a message applied twice counts a duplicate."""
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in metric_values(worker).items()
        if name == "linkwatch_reports_total"
    }


def test_a_run_without_the_local_handoff_ends_as_the_reference_run_with_it(
    broker: EmbeddedBroker, tmp_path: Path, stream: Stream, reference: ReferenceRun
) -> None:
    run = OrderedDeployment(broker, tmp_path)
    analyst = run.key("analyst", name="analyst")
    worker = run.worker(LINKWATCH_LOCAL_HANDOFF="false")
    try:
        worker.wait_ready()
        run.push(stream.lines)
        converge(run, lambda: worker, analyst, reference.view())
        settings = run.settings
        assert handoffs(worker) == {settings.identity_topic: 0, settings.actor_reports_topic: 0}
        without = outcomes(worker)
    finally:
        run.close()
    assert outcomes(reference.deployment.workers[0]) == without
    handed = handoffs(reference.deployment.workers[0])
    print(f"the reference run handed off {handed}")
    topics = (
        reference.deployment.settings.identity_topic,
        reference.deployment.settings.actor_reports_topic,
    )
    assert all(handed[topic] > 0 for topic in topics), handed
