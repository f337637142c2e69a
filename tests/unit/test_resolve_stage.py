"""The resolve stage over redelivered input: what it stamps on records must not depend on how
often a crash made intake send the same reports again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
import pytest

from agents.intake import validate_batch
from agents.resolve import ResolveStage
from streams.metrics import Metrics
from streams.settings import Settings
from tests.factories import Message, encode, make_report

# Two input partitions, and partition 1 never sends: it holds the watermark back until
# 10,000 reports have come from partition 0 (graph/watermark.py).
SETTINGS = Settings(pseudonym_key="resolve-stage-test-key-0123", partitions=2)


def _resolve(
    identity: list[bytes], settings: Settings = SETTINGS
) -> tuple[list[list[Any]], Metrics]:
    """The `[actor_id, record]` entries the stage sends to the actor-reports topic for
    these identity messages, in order, and its metrics."""
    sent: list[list[Any]] = []
    metrics = Metrics()

    async def send(topic: str, key: Any, value: bytes, *rest: Any) -> asyncio.Future[None]:
        if topic == SETTINGS.actor_reports_topic:
            sent.extend(orjson.loads(value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def run() -> None:
        stage = ResolveStage(settings, metrics, send)
        stage.partitions.assign([0])  # the identity topic's one partition
        try:
            for position, value in enumerate(identity):
                # As the agent does: its sends are done once the deliveries are.
                await asyncio.gather(*await stage.partitions.process(0, Message(value, position)))
        finally:
            stage.close()

    asyncio.run(run())
    return sent, metrics


def _rows(reports: list[dict[str, Any]], offsets: list[int]) -> list[bytes]:
    """Intake's identity messages for these reports at these offsets of input partition 0."""
    values = [encode(report) for report in reports]
    packs, rejected = validate_batch(values, [0] * len(values), offsets, SETTINGS.pseudonyms())
    assert not rejected
    return packs


def _stamps(batches: list[list[int]], settings: Settings = SETTINGS) -> list[Any]:
    """The watermark on every record the stage sends, when partition 0's reports at these
    input offsets reach it, one identity message per batch."""
    identity = [
        pack
        for offsets in batches
        for pack in _rows([make_report(f"acct-{o % 500}", f"victim-{o}", at=timedelta(hours=o),
                                       report_id=f"r-{o}") for o in offsets], offsets)
    ]  # fmt: skip
    sent, _ = _resolve(identity, settings)
    return [record["watermark"] for _, record in sent if record["kind"] == "report"]


@pytest.mark.parametrize("in_process", [False, True], ids=["resolver process", "in the worker"])
def test_reports_sent_again_after_a_crash_do_not_move_the_watermark(in_process: bool) -> None:
    # 6,000 reports, then a crash before any commit: intake sends all of them again, then
    # the rest. 12,000 rows reach the resolver, only 6,000 reports, each routed once.
    first = list(range(6_000))
    stamps = _stamps([first, first], replace(SETTINGS, resolver_process=not in_process))
    # JSON has no -Infinity: a watermark still held back by partition 1 is null.
    assert stamps == [None] * 6_000


@pytest.mark.parametrize("in_process", [False, True], ids=["resolver process", "in the worker"])
def test_reports_sent_again_after_an_erasure_do_not_bring_the_person_back(
    in_process: bool,
) -> None:
    # A crash after the erasure but before intake committed the reports: they reach the
    # resolver again, after it. A report filed after the erasure is new, as is its actor.
    pseudonyms = SETTINGS.pseudonyms()
    reports = [make_report("tom", f"victim-{i}", report_id=f"r-{i}") for i in range(3)]
    reports.append(make_report("someone", "ellie", report_id="r-3"))
    # As `linkwatch erase` writes them: one account, as an offender and as a victim.
    erasures = [
        orjson.dumps([{"erase": {"offender": f"chirp:{pseudonyms.offender(account)}",
                                 "victim": f"chirp:{pseudonyms.victim('chirp', account)}"}}])
        for account in ("tom", "ellie")
    ]  # fmt: skip
    again = make_report("tom", "victim-new", report_id="r-new")
    identity = [*_rows(reports, [0, 1, 2, 3]), *erasures, *_rows(reports, [0, 1, 2, 3]),
                *_rows([again], [4])]  # fmt: skip
    sent, metrics = _resolve(identity, replace(SETTINGS, resolver_process=not in_process))

    # Tom's erasure: his actor, and every partition's actors as a victim; Ellie's: only as
    # a victim (she reported nothing). Then the new report alone.
    kinds = [record["kind"] for _, record in sent]
    assert kinds == ["report"] * 4 + ["erase"] * (1 + 2 + 2) + ["report"]
    actor, record = sent[-1]
    assert record["report"][0] == "r-new"
    [first] = [key for key, record in sent if record.get("report", [None])[0] == "r-0"]
    assert actor == first  # the same account, so the same id: a new actor with one edge
    duplicates = metrics.reports.labels(outcome="duplicate")._value.get()
    assert duplicates == 4
