"""A follower keeps a worker's shared state in step with a topic (streams/shared.py) without
polling the broker hard: every fetch costs the broker and the worker CPU, data or not."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.conn import AIOKafkaConnection

from streams.broker import EmbeddedBroker
from streams.shared import Followed

pytestmark = pytest.mark.integration
_topics = itertools.count(1)


def test_an_idle_follower_fetches_a_few_times_a_second_and_still_applies_what_arrives(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: Counter[str] = Counter()
    send = AIOKafkaConnection.send

    def counted(self: AIOKafkaConnection, request: Any, *args: Any, **kwargs: Any) -> Any:
        sent[type(request).__name__] += 1
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConnection, "send", counted)
    topic = f"followed-{next(_topics)}"

    async def run() -> tuple[int, list[dict[str, Any]]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, orjson.dumps({"n": 1}))  # creates the topic
            applied: list[dict[str, Any]] = []
            follower = Followed(broker.bootstrap, topic, applied.append)
            task = asyncio.create_task(follower.run())
            try:
                await asyncio.wait_for(follower.ready.wait(), 30)
                before = sent["FetchRequest"]
                await asyncio.sleep(2.0)  # idle: nothing is produced meanwhile
                idle_fetches = sent["FetchRequest"] - before
                await producer.send_and_wait(topic, orjson.dumps({"n": 2}))
                for _ in range(300):  # a wait for the record, not a timing
                    if len(applied) == 2:
                        break
                    await asyncio.sleep(0.05)
                return idle_fetches, applied
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await producer.stop()

    idle_fetches, applied = asyncio.run(run())
    # The pipeline's 25 ms wait would make about 80 fetches in these two seconds; a busy
    # machine only makes fewer.
    assert idle_fetches <= 20, idle_fetches
    assert applied == [{"n": 1}, {"n": 2}]
