"""A worker asked to stop after its broker has gone exits within its deadline, saying why,
instead of waiting on the broker until a SIGKILL (streams/cli.py:STOP_DEADLINE)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.cli import STOP_DEADLINE
from tests.faults.conftest import Deployment

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_a_worker_whose_broker_has_gone_stops_within_its_deadline(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    deployment = Deployment(own_broker, tmp_path)
    worker = deployment.worker()
    try:
        worker.wait_ready()
        own_broker.stop()
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        # Faust's stop waits on the broker; the deadline ends it. A margin for a slow machine.
        worker.process.wait(STOP_DEADLINE + 30)
        assert worker.process.returncode == 1  # not a clean stop: a supervisor sees it
        said = worker.log.read_text()
        assert f"did not stop within {STOP_DEADLINE:.0f} s of being asked to" in said
    finally:
        deployment.close()
