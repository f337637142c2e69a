"""Two workers: each holds part of the graph; the API answers the same from either."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson

from streams.demo import demo_reports
from tests.factories import make_report
from tests.integration.conftest import Deployment, Worker


def wait_split(workers: list[Worker], partitions: int, timeout: float = 90) -> None:
    """Until every partition is owned, by workers that each own some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [set((w.health() or {}).get("partitions", [])) for w in workers]
        if (
            all(owned)
            and set().union(*owned) == set(range(partitions))
            and sum(map(len, owned)) == partitions
        ):
            return
        time.sleep(0.3)
    raise AssertionError("the workers did not share the partitions:\n" + workers[-1].tail())


def test_actor_requests_reach_the_owner_and_snapshots_gather_every_part(
    deployment: Deployment,
) -> None:
    analyst = deployment.key("analyst", name="analyst")
    first = deployment.worker()
    first.wait_ready()
    second = deployment.worker()
    wait_split([first, second], deployment.settings.partitions)
    second.wait_ready_api()

    locals_ = [
        orjson.dumps(make_report(f"local-{i}", f"w{i}", "kent", at=timedelta(days=i)))
        for i in range(12)
    ]
    deployment.push([*demo_reports(), *locals_])
    deployment.wait_for_alerts(2)
    time.sleep(4)  # both workers have announced their partitions since the split

    snapshots = []
    for worker in (first, second):
        status, document = worker.http("GET", "/v1/graph/snapshot", analyst)
        assert status == 200, document
        snapshots.append(document)
    actors = {node["id"] for node in snapshots[0]["nodes"] if node["kind"] == "actor"}
    assert len(actors) == 13  # the demo's one actor and twelve local ones, from both parts
    assert {n["id"] for n in snapshots[1]["nodes"]} == {n["id"] for n in snapshots[0]["nodes"]}

    for node in sorted(actors):
        actor = node.removeprefix("actor:")
        answers = [w.http("GET", f"/v1/actors/{actor}", analyst) for w in (first, second)]
        assert answers[0][0] == answers[1][0] == 200, answers
        assert answers[0][1]["accounts"] == answers[1][1]["accounts"]
