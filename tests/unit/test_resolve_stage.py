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


def _stamps(batches: list[list[int]], settings: Settings = SETTINGS) -> list[Any]:
    """The watermark on every record the stage sends, when partition 0's reports at these
    input offsets reach it, one identity message per batch."""
    sent: list[list[Any]] = []

    async def send(topic: str, key: Any, value: bytes, *rest: Any) -> asyncio.Future[None]:
        if topic == SETTINGS.actor_reports_topic:
            sent.extend(orjson.loads(value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def run() -> None:
        stage = ResolveStage(settings, Metrics(), send)
        stage.partitions.assign([0])  # the identity topic's one partition
        position = 0  # on the identity topic
        for offsets in batches:
            values = [
                encode(make_report(f"acct-{o % 500}", f"victim-{o}", at=timedelta(hours=o),
                                   report_id=f"r-{o}"))
                for o in offsets
            ]  # fmt: skip
            packs, rejected = validate_batch(
                values, [0] * len(values), offsets, SETTINGS.pseudonyms()
            )
            assert not rejected
            for pack in packs:
                # As the agent does: its sends are done once the deliveries are.
                await asyncio.gather(*await stage.partitions.process(0, Message(pack, position)))
                position += 1

    asyncio.run(run())
    return [record["watermark"] for _, record in sent if record["kind"] == "report"]


@pytest.mark.parametrize("in_process", [False, True], ids=["resolver process", "in the worker"])
def test_reports_sent_again_after_a_crash_do_not_move_the_watermark(in_process: bool) -> None:
    # 6,000 reports, then a crash before any commit: intake sends all of them again, then
    # the rest. 12,000 rows reach the resolver, only 6,000 reports.
    first = list(range(6_000))
    stamps = _stamps([first, first], replace(SETTINGS, resolver_process=not in_process))
    # JSON has no -Infinity: a watermark still held back by partition 1 is null.
    assert stamps == [None] * 12_000
