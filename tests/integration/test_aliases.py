"""Alias linking on a real broker: merges across partitions, and recovery after a kill."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from graph.identity import actor_id_for
from streams.kafka import actor_partition
from tests.factories import encode, make_report
from tests.integration.conftest import Deployment, Worker


def partition_of(deployment: Deployment, account: str) -> int:
    settings = deployment.settings
    token = settings.pseudonyms().offender(account)
    return actor_partition(
        actor_id_for(f"chirp:{token}", settings.secret_bytes), settings.partitions
    )


def accounts_on_distinct_partitions(deployment: Deployment, count: int) -> list[str]:
    chosen: dict[int, str] = {}
    for i in range(1000):
        chosen.setdefault(partition_of(deployment, f"alias-{i}"), f"alias-{i}")
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("could not spread accounts over partitions")


def wait_for_metric(worker: Worker, line: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while line not in worker.metrics():
        assert time.monotonic() < deadline, f"{line} never appeared"
        time.sleep(0.2)


def test_a_bridging_report_merges_actors_from_other_partitions_and_survives_a_kill(
    deployment: Deployment,
) -> None:
    first, second, third, fourth = accounts_on_distinct_partitions(deployment, 4)
    worker = deployment.worker()
    deployment.push(
        [
            encode(make_report(first, "v1", "norfolk", signals={"phone_hash": "p1"})),
            encode(
                make_report(
                    third,
                    "v3",
                    "kent",
                    at=timedelta(days=20),
                    signals={"email_hash": "e1", "device_id": "d1"},
                )
            ),
        ],
        name="apart.jsonl",
    )
    # Both are separate actors before the bridge arrives (else there is nothing to merge).
    worker.wait_owning(deployment.settings.partitions)
    wait_for_metric(worker, 'linkwatch_reports_total{outcome="accepted"} 2.0')
    # `second` shares a phone with `first` and an email with `third`: one actor, three regions.
    deployment.push(
        [
            encode(
                make_report(
                    second,
                    "v2",
                    "suffolk",
                    at=timedelta(days=40),
                    signals={"phone_hash": "p1", "email_hash": "e1", "ip": "10.0.0.1"},
                )
            )
        ],
        name="bridge.jsonl",
    )
    [alert] = deployment.wait_for_alerts(1)
    assert alert["kind"] == "serial" and alert["level"] == 3
    assert alert["accounts"] == sorted(f"chirp:{a}" for a in (first, second, third))
    assert sorted(link["signal"] for link in alert["links"]) == ["email_hash", "phone_hash"]
    # The actor first seen by the resolver keeps its id; the two pushed together may arrive
    # in either order, since they sit on different partitions of the reports topic.
    secret, pseudonyms = deployment.settings.secret_bytes, deployment.settings.pseudonyms()
    assert alert["actor_id"] in {
        actor_id_for(f"chirp:{pseudonyms.offender(a)}", secret) for a in (first, third)
    }
    assert len(alert["merged_actor_ids"]) == 1

    worker.kill()
    deployment.worker()
    # After the kill, `fourth` links to `third` through the device: the resolver's state
    # (which account is whose) and the graph (three regions) must both have been rebuilt.
    deployment.push(
        [
            encode(
                make_report(
                    fourth, "v4", "devon", at=timedelta(days=60), signals={"device_id": "d1"}
                )
            )
        ],
        name="after-kill.jsonl",
    )
    alerts = deployment.wait_for_alerts(2)
    assert [a["level"] for a in alerts] == [3, 4]
    assert alerts[1]["accounts"] == sorted(f"chirp:{a}" for a in (first, second, third, fourth))
    assert alerts[1]["actor_id"] == alert["actor_id"]


def test_an_actor_too_large_for_one_kafka_message_merges_all_the_same(
    deployment: Deployment,
) -> None:
    # An absorb carries the whole absorbed actor, about 226 bytes an edge: 6,000 victims of
    # one spam account make it about 1.4 MB, more than Kafka's default 1 MB message.
    older, spammer, bridge = accounts_on_distinct_partitions(deployment, 3)
    worker = deployment.worker()
    deployment.push(
        [encode(make_report(older, "v-old", "norfolk", signals={"phone_hash": "p-big"}))],
        name="older.jsonl",
    )
    worker.wait_owning(deployment.settings.partitions)
    wait_for_metric(worker, 'linkwatch_reports_total{outcome="accepted"} 1.0')
    spam = [
        make_report(spammer, f"spam-victim-{n}", "kent", at=timedelta(days=10, minutes=n),
                    signals={"email_hash": "e-big"})
        for n in range(6_000)
    ]  # fmt: skip
    deployment.push([encode(report) for report in spam], name="spam.jsonl")
    wait_for_metric(worker, 'linkwatch_reports_total{outcome="accepted"} 6001.0', timeout=120)
    # `bridge` shares the older account's phone and the spammer's email: all three are one.
    signals = {"phone_hash": "p-big", "email_hash": "e-big"}
    bridging = make_report(bridge, "v-bridge", "suffolk", at=timedelta(days=40), signals=signals)
    deployment.push([encode(bridging)], name="bridge.jsonl")
    serial: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while not serial:
        assert time.monotonic() < deadline, "no serial alert after the merge"
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        serial = [alert for alert in deployment.alerts() if alert["kind"] == "serial"]
        time.sleep(0.5)
    [alert] = serial
    assert alert["level"] == 3 and alert["victim_count"] == 6_002
    assert alert["accounts"] == sorted(f"chirp:{a}" for a in (older, spammer, bridge))
    assert worker.process is not None and worker.process.poll() is None, worker.tail()
