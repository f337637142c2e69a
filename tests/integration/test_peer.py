"""The Quix Streams baseline (`streams/peer.py`) that `make bench` compares linkwatch with."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from streams.bench import peer_rate, produce, settings_for, stream
from streams.broker import EmbeddedBroker


def test_the_peer_states_every_report_and_counts_its_own_and_the_brokers_cpu(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = stream(20_000)
    settings = settings_for(broker, tmp_path, "peer")
    asyncio.run(produce(settings.bootstrap, settings.reports_topic, messages))

    peer = peer_rate(settings.bootstrap, settings.reports_topic, len(messages), broker.pid)

    # peer_rate itself refuses a run that read fewer messages or stated fewer reports.
    assert peer["messages"] == len(messages)
    assert 0 < peer["stated"] == peer["reports"] <= len(messages)
    # CPU from its first message read to its last report through the state: some of it
    # in the peer's own process and some in the broker, which serves the repartition topic,
    # and no more than the stretch's wall time on every core.
    elapsed = peer["messages"] / peer["per_s"]
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert 0 < peer["cpu_s"] <= elapsed * (os.cpu_count() or 1) + tick
    assert 0 < peer["broker_cpu_s"] <= elapsed * (os.cpu_count() or 1) + tick
