"""SIGKILL mid-stream, again and again: the run ends exactly as an undisturbed run does."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from tests.faults.conftest import (
    OrderedDeployment,
    ReferenceRun,
    Stream,
    committed_offsets,
    converge,
    end_offsets,
    fault_random,
    processed,
    push_in_background,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KILLS = 3


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    broker: EmbeddedBroker, tmp_path: object, stream: Stream, reference: ReferenceRun
) -> None:
    rng = fault_random("sigkill")
    run = OrderedDeployment(broker, tmp_path)  # type: ignore[arg-type]
    analyst = run.key("analyst", name="analyst")
    chunks = stream.chunks(rng, KILLS + 1)
    worker = run.worker()
    try:
        for number, chunk in enumerate(chunks[:-1], start=1):
            # The stream goes on while the worker is down: each chunk is pushed as soon as
            # the (re)started worker is launched, so it faces a backlog.
            pusher = push_in_background(run, chunk, f"chunk{number}.jsonl")
            # Killed once this process has finished a random number of messages: inside this
            # chunk, or inside the redelivered backlog the last kill left behind.
            target = rng.randint(1, len(chunk))
            wait_until(
                lambda worker=worker, target=target: processed(worker) >= target,
                120,
                f"{target} processed",
                poll=0.02,
            )
            done = processed(worker)
            worker.kill()
            print(f"kill {number}: chunk of {len(chunk)} lines; this process had done {done}")
            assert pusher.wait(60) == 0
            worker = run.worker()
        run.push(chunks[-1], name="last-chunk.jsonl")
        converge(run, lambda: worker, analyst, reference.view())
    finally:
        run.close()


def test_everything_processed_is_committed_so_a_kill_redoes_little(
    broker: EmbeddedBroker, tmp_path: Path, stream: Stream
) -> None:
    """After a SIGKILL the worker processes again what was not committed (README, "Where
    state lives"). That is bounded only if what was processed does get committed: every
    consumed partition's committed offset must reach its end once the worker is idle."""
    deployment = OrderedDeployment(broker, tmp_path)
    request_close = deployment.close
    worker = deployment.worker()
    worker.wait_owning(deployment.settings.partitions)
    # A trickle first: one message at a time on each internal partition. Then a burst while
    # the worker is paused (a long GC pause, a stalled VM), so that it meets a backlog and
    # fetches many full batches from every topic: the rest of the stream, then all of it
    # redelivered eight times.
    trickle = 40
    deployment.push(stream.lines[:trickle], name="trickle.jsonl")
    wait_until(lambda: processed(worker) >= trickle, 60, "the trickle", alive=[worker])
    burst = stream.lines[trickle:] + stream.lines * 8
    assert worker.process is not None
    worker.process.send_signal(signal.SIGSTOP)
    try:
        deployment.push(burst, name="burst.jsonl")
    finally:
        worker.process.send_signal(signal.SIGCONT)
    total = trickle + len(burst)
    wait_until(lambda: processed(worker) >= total, 120, "the stream", alive=[worker])
    settings = deployment.settings
    topics = [settings.reports_topic, settings.identity_topic, settings.actor_reports_topic]
    ends = end_offsets(deployment, topics)
    committed: dict[str, int | None] = {}

    def caught_up() -> bool:
        committed.update(committed_offsets(settings, topics))
        return all(committed.get(key) == end for key, end in ends.items())

    try:
        wait_until(caught_up, 20, "the committed offsets to reach the ends", poll=1.0)
    except AssertionError:
        behind = {key: (committed.get(key), end) for key, end in ends.items()
                  if committed.get(key) != end}  # fmt: skip
        raise AssertionError(f"(committed, end) of the partitions behind: {behind}") from None
    finally:
        request_close()
