"""The resolver's state in a child process (streams/offload.py:StateProcess): the same records
in the same order as in the worker, answers never mixed up, and a dead child never silent."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.children import discard
from agents.intake import validate_batch
from agents.resolve import Resolvers, ResolveStage, on_resolvers
from streams import memory
from streams.metrics import Metrics
from streams.offload import StateLost, StateProcess
from streams.settings import Settings
from tests.factories import Message, encode, make_report

SETTINGS = Settings(pseudonym_key="state-process-test-key-0123", partitions=4)


def _identity_messages() -> list[bytes]:
    """Identity messages as intake writes them: accounts that share emails (merges across
    partitions), a hub, an erasure and a message nobody can read."""
    values = [
        encode(make_report(f"acct-{i % 250}", f"victim-{i}", at=timedelta(minutes=i),
                           signals={"email_hash": f"mail-{i % 97}"} if i % 3 else {}))
        for i in range(600)
    ]  # fmt: skip
    values += [
        encode(make_report(f"hub-{i}", f"hv-{i}", signals={"device_id": "shared-device"}))
        for i in range(30)
    ]
    messages = []
    for start in range(0, len(values), 70):
        chunk = values[start : start + 70]
        offsets = list(range(start, start + len(chunk)))
        packs, rejected = validate_batch(chunk, [0] * len(chunk), offsets, SETTINGS.pseudonyms())
        assert not rejected
        messages += packs
    erasure = {"erase": {"offender": orjson.loads(messages[0])[0][4], "victim": "nobody"}}
    return [*messages, orjson.dumps([erasure]), b"not json"]


def _sent(
    settings: Settings, messages: list[bytes]
) -> tuple[list[tuple[str, Any, bytes]], Metrics]:
    """Everything the stage sends for `messages`, in the order it sent it."""
    sent: list[tuple[str, Any, bytes]] = []
    metrics = Metrics()

    async def send(topic: str, key: Any, value: bytes, partition: Any, *rest: Any) -> Any:
        await asyncio.sleep(0)  # a real send can yield: order must not depend on it
        sent.append((topic, partition, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def run() -> None:
        stage = ResolveStage(settings, metrics, send)
        stage.partitions.assign([0])
        try:
            deliveries: list[Any] = []
            # An agent's batch: every message submitted before any answer is awaited.
            for offset, value in enumerate(messages):
                deliveries += await stage.partitions.process(0, Message(value, offset))
            await asyncio.gather(*deliveries)
        finally:
            stage.close()

    asyncio.run(run())
    return sent, metrics


def test_the_resolver_process_sends_what_the_worker_sends_in_the_same_order(
    allocator_chosen_by: str,
) -> None:
    """Also with its heap split (memory.split_heap), as the worker starts it."""
    messages = _identity_messages()
    in_child, child_metrics = _sent(replace(SETTINGS, resolver_process=True), messages)
    in_worker, worker_metrics = _sent(replace(SETTINGS, resolver_process=False), messages)
    assert in_child == in_worker
    topics = {topic for topic, _, _ in in_child}
    assert topics == {SETTINGS.actor_reports_topic, SETTINGS.hubs_topic}
    kinds = {
        record["kind"]
        for topic, _, value in in_child
        if topic == SETTINGS.actor_reports_topic
        for _, record in orjson.loads(value)
    }
    assert {"report", "merge", "await", "erase"} <= kinds
    for metrics in (child_metrics, worker_metrics):
        assert metrics.internal_errors._value.get() == 1  # the unreadable message


def _heap(state: object) -> tuple[str | None, bool]:
    """The allocator a child was started with, and whether its heap is split."""
    return os.environ.get("PYTHONMALLOC"), memory.split_heap()


def test_the_resolver_process_splits_its_heap_unless_an_operator_chose_the_allocator(
    allocator_chosen_by: str,
) -> None:
    async def run() -> tuple[str | None, bool]:
        process = StateProcess(_heap, dict, "lw-test", print,
                               environment=memory.split_heap_environment())  # fmt: skip
        try:
            answer: tuple[str | None, bool] = await process.call()
            return answer
        finally:
            process.close()

    expected = ("pymalloc", True) if allocator_chosen_by == "linkwatch" else ("malloc", False)
    assert asyncio.run(run()) == expected
    assert os.environ["PYTHONMALLOC"] == "malloc"  # the worker's own is unchanged


def _policy(state: object) -> int:
    """The scheduling policy a child runs under."""
    return os.sched_getscheduler(0)


def test_the_resolver_process_leaves_a_busy_core_to_the_workers_loop() -> None:
    """The resolver process runs as a batch task, as intake's do (streams/offload.py)."""

    async def run() -> int:
        process = StateProcess(_policy, dict, "lw-test", print)
        try:
            answer: int = await process.call()
            return answer
        finally:
            process.close()

    assert asyncio.run(run()) == os.SCHED_BATCH


def _resolvers() -> StateProcess[Resolvers]:
    lost: list[str] = []
    process = StateProcess(on_resolvers, partial(Resolvers, SETTINGS), "lw-test", lost.append)
    process.lost = lost  # type: ignore[attr-defined]
    return process


def test_an_answer_nobody_waits_for_any_more_is_still_read_in_turn() -> None:
    async def run() -> tuple[Any, Any]:
        process = _resolvers()
        try:
            await process.call("create", 0, 7)
            value = _identity_messages()[0]
            abandoned = asyncio.ensure_future(process.call("apply", 0, 7, value, False))
            await asyncio.sleep(0)
            abandoned.cancel()
            # The next answers are this request's own, not the abandoned one's.
            again = await process.call("apply", 0, 7, value, True)
            return again, await process.call("forget_some", [(0, 7)])
        finally:
            process.close()

    again, (behind, accounts) = asyncio.run(run())
    assert again.packs == [] and again.accounts == accounts  # replaying: nothing to send
    assert behind is False and accounts > 0


def test_a_resolver_process_that_dies_fails_its_requests_and_says_so() -> None:
    async def run() -> tuple[list[str], list[BaseException | None]]:
        process = _resolvers()
        try:
            await process.call("create", 0, 1)
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
            value = _identity_messages()[0]
            outcomes = await asyncio.gather(
                process.call("apply", 0, 1, value, False),
                process.call("forget_some", [(0, 1)]),
                return_exceptions=True,
            )
            later = await asyncio.gather(process.call("forget_some", []), return_exceptions=True)
            return process.lost, [*outcomes, *later]  # type: ignore[attr-defined]
        finally:
            process.close()

    lost, outcomes = asyncio.run(run())
    assert len(lost) == 1 and "lw-test process died" in lost[0]
    assert all(isinstance(outcome, StateLost) for outcome in outcomes)


@pytest.mark.parametrize("generation", [0, 2])
def test_a_request_for_a_replaced_state_does_nothing(generation: int) -> None:
    resolvers = Resolvers(SETTINGS)
    resolvers.create(0, 1)
    value = _identity_messages()[0]
    resolved = resolvers.apply(0, generation, value, False)
    assert resolved.packs == [] and resolved.accounts == -1
    assert resolvers.apply(0, 1, value, False).packs


@pytest.mark.parametrize("in_process", [False, True], ids=["resolver process", "in the worker"])
def test_retention_keeps_a_state_that_replay_is_still_rebuilding(in_process: bool) -> None:
    # PartitionedState stores a partition's state only once its catch-up replay is done; the
    # expiry timer runs meanwhile, and must not drop the state being rebuilt (it did: every
    # message after the replay then resolved to nothing).
    sent: list[bytes] = []

    async def send(topic: str, key: Any, value: bytes, *rest: Any) -> Any:
        sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def run() -> None:
        stage = ResolveStage(replace(SETTINGS, resolver_process=not in_process), Metrics(), send)
        stage.partitions.assign([0])
        try:
            handle = await stage._create(0)  # what the catch-up does first
            await stage.expire_some()  # the timer, mid-replay
            value = _identity_messages()[0]
            await asyncio.gather(*await stage._apply(0, handle, Message(value, 0), False))
        finally:
            stage.close()

    asyncio.run(run())
    assert sent


def test_the_resolver_hands_pages_back_once_retention_has_caught_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention's last step copies the shrunken tables, which frees the old ones: the free
    pages go back then, even when fewer than half the accounts went (which also does it)."""
    released: list[int] = []
    monkeypatch.setattr("agents.children.memory.release", lambda: released.append(1))
    settings = replace(SETTINGS, partitions=1, window_days=10.0)
    resolvers = Resolvers(settings)
    resolvers.create(0, 1)

    def apply(values: list[bytes], start: int) -> None:
        offsets = list(range(start, start + len(values)))
        packs, _ = validate_batch(values, [0] * len(values), offsets, settings.pseudonyms())
        for pack in packs:
            resolvers.apply(0, 1, pack, False)

    apply([encode(make_report(f"old-{i}", f"v-{i}")) for i in range(3_000)], 0)
    apply([encode(make_report(f"new-{i}", f"w-{i}", at=timedelta(days=5))) for i in range(6_000)],
          3_000)  # fmt: skip
    assert resolvers.forget_some([(0, 1)]) == (False, 9_000)  # the timer's call, each second
    # The window slides past the 3,000 old accounts, not the 6,000 newer ones.
    apply([encode(make_report("late", "late-victim", at=timedelta(days=10, hours=12)))], 9_000)
    steps = []
    while True:
        behind, accounts = resolvers.forget_some([(0, 1)])
        steps.append((behind, len(released)))
        if not behind:
            break
    assert accounts == 6_001
    assert steps[0] == (True, 0)  # a slice at a time (`FORGET_SLICE`)
    assert steps[-1] == (False, 1)  # and the pages go back once, when it has caught up
    assert resolvers.forget_some([(0, 1)]) == (False, 6_001) and len(released) == 1


def _work(method: str, *args: Any) -> Any:
    """The resolver process's work, with a slow export (the time a large state takes to
    pickle), and a restore that kills the fresh process when asked to."""
    if method == "export":
        time.sleep(0.5)
    if method == "restore" and args[0] == "die":
        os._exit(1)
    return on_resolvers(method, *args)


@pytest.mark.parametrize("fresh_one", ["takes over", "dies"])
def test_a_resolver_state_moved_to_a_fresh_process_goes_on_as_before(
    fresh_one: str, tmp_path: Path
) -> None:
    """`StateProcess.renew`: the state moves to a fresh process (its pickle, `__reduce__`
    of the compiled classes), and the requests that come while it moves are held and
    answered by the fresh one, in order. If the fresh one dies, the old one goes on. No
    copy of the state is left behind in the data dir either way."""
    settings = replace(SETTINGS, data_dir=tmp_path)
    messages = _identity_messages()
    reference = Resolvers(settings)
    reference.create(0, 1)
    expected = [reference.apply(0, 1, value, False) for value in messages]
    expected_retention = reference.forget_some([(0, 1)])
    lost: list[str] = []

    async def run() -> tuple[list[Any], Any, bool, tuple[int | None, int | None]]:
        process = StateProcess(_work, partial(Resolvers, settings), "lw-test", lost.append)
        try:
            await process.call("create", 0, 1)
            first = [await process.call("apply", 0, 1, value, False) for value in messages[:5]]
            old_pid = process.pid
            restore = ("restore",) if fresh_one == "takes over" else ("restore", "die")
            renewal = asyncio.ensure_future(process.renew(("export",), restore, discard))
            while not process.moving:  # the fresh process has started; the state is moving
                assert not renewal.done(), "the state did not move"
                await asyncio.sleep(0.01)
            rest = [process.submit("apply", 0, 1, value, False) for value in messages[5:]]
            moved = await renewal
            answers = [*first, *await asyncio.gather(*rest)]
            retention = await process.call("forget_some", [(0, 1)])
            return answers, retention, moved, (old_pid, process.pid)
        finally:
            process.close()

    answers, retention, moved, (old_pid, new_pid) = asyncio.run(run())
    assert answers == expected and retention == expected_retention
    assert moved is (fresh_one == "takes over")
    assert (new_pid != old_pid) is moved
    assert not lost
    assert not list(tmp_path.iterdir())


def test_a_resolve_stage_whose_state_shrank_moves_it_to_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once retention has caught up with the state a small part of what it was, and the
    identity topic is quiet, the stage moves it to a fresh resolver process (agents/
    resolve.py); what it sends after is what a stage that kept its process sends."""
    monkeypatch.setattr("agents.resolve.RENEW_FROM", 1_000)
    monkeypatch.setattr("agents.resolve.RENEW_IDLE", 0.0)
    monkeypatch.setattr("agents.resolve.RENEW_EVERY", 0.0)
    settings = replace(SETTINGS, partitions=1, window_days=10.0, data_dir=tmp_path)

    def packs(reports: list[dict[str, Any]], start: int) -> list[bytes]:
        values = [encode(report) for report in reports]
        offsets = list(range(start, start + len(values)))
        found, _ = validate_batch(values, [0] * len(values), offsets, settings.pseudonyms())
        return found

    old = packs([make_report(f"old-{i}", f"v-{i}", signals={"email_hash": f"m-{i % 700}"})
                 for i in range(2_000)], 0)  # fmt: skip
    # Past the window: the old accounts go. Then accounts that link to each other.
    late = packs([make_report("late", "late-victim", at=timedelta(days=20))], 2_000)
    later = packs([make_report(f"new-{i}", f"w-{i}", at=timedelta(days=20, minutes=i),
                               signals={"email_hash": f"n-{i % 3}"}) for i in range(30)],
                  2_001)  # fmt: skip

    def run(in_process: bool) -> tuple[list[tuple[str, Any, bytes]], set[int | None]]:
        sent: list[tuple[str, Any, bytes]] = []

        async def send(topic: str, key: Any, value: bytes, partition: Any, *rest: Any) -> Any:
            sent.append((topic, partition, value))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def go() -> set[int | None]:
            stage = ResolveStage(replace(settings, resolver_process=not in_process), Metrics(),
                                 send)  # fmt: skip
            stage.partitions.assign([0])
            pids = set()
            try:
                offset = 0
                for value in [*old, *late]:
                    await asyncio.gather(*await stage.partitions.process(0, Message(value, offset)))
                    offset += 1
                pids.add(stage.state.pid)
                while await stage.expire_some():  # retention catches up...
                    pids.add(stage.state.pid)
                await stage.expire_some()  # ...and then the state moves
                pids.add(stage.state.pid)
                for value in later:
                    await asyncio.gather(*await stage.partitions.process(0, Message(value, offset)))
                    offset += 1
                await stage.expire_some()
            finally:
                stage.close()
            return pids

        return sent, asyncio.run(go())

    moved, pids = run(in_process=False)
    kept, _ = run(in_process=True)
    assert moved == kept
    assert len(pids) == 2  # the resolver process it started with, and the fresh one
    assert not list(tmp_path.iterdir())


def test_a_state_left_by_a_move_that_was_killed_is_removed_later(tmp_path: Path) -> None:
    """A worker killed while its resolver state moved leaves the file behind (`export`):
    the next resolver to start on that data dir removes it once no move can be reading it."""
    stale = tmp_path / "lw-resolver-state-old.pickle"
    moving = tmp_path / "lw-resolver-state-new.pickle"
    other = tmp_path / "intake.sqlite3"
    for path in (stale, moving, other):
        path.write_bytes(b"state")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(other, (an_hour_ago, an_hour_ago))
    Resolvers(replace(SETTINGS, data_dir=tmp_path))
    assert sorted(tmp_path.iterdir()) == sorted([moving, other])
