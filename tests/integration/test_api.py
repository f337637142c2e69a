"""The HTTP API on a real worker: who may do what, intake limits, lifecycle, snapshots."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from typing import Any

import networkx as nx
import orjson

from graph.pipeline import Pipeline
from graph.snapshot import filtered, to_networkx
from streams.api import MAX_NOTE
from streams.demo import demo_reports
from tests.factories import make_report
from tests.integration.conftest import Deployment, Worker

ALERT = "act_unknown-L3"
ACTOR = "act_unknown"
REPORT = orjson.dumps([make_report("auth-test", "v", "kent", report_id="auth-1")])

# endpoint -> the roles allowed to call it (docs/api.md)
ENDPOINTS: list[tuple[str, str, bytes | None, set[str]]] = [
    ("GET", "/v1/whoami", None, {"platform", "responder", "analyst", "admin"}),
    ("POST", "/v1/reports", REPORT, {"platform", "admin"}),
    ("GET", "/v1/alerts", None, {"responder", "analyst", "admin"}),
    ("GET", f"/v1/alerts/{ALERT}", None, {"responder", "analyst", "admin"}),
    ("POST", f"/v1/alerts/{ALERT}/acknowledge", b"{}", {"responder", "admin"}),
    ("POST", f"/v1/alerts/{ALERT}/resolve", b"{}", {"responder", "admin"}),
    ("POST", f"/v1/alerts/{ALERT}/dismiss", b'{"note": "x"}', {"responder", "admin"}),
    ("GET", f"/v1/actors/{ACTOR}", None, {"responder", "analyst", "admin"}),
    ("GET", f"/v1/actors/{ACTOR}/graph", None, {"responder", "analyst", "admin"}),
    ("GET", "/v1/graph/snapshot", None, {"analyst", "admin"}),
]
ROLES = ["platform", "responder", "analyst", "admin"]


def keys_for(deployment: Deployment) -> dict[str, str]:
    return {
        role: deployment.key(role, platform="chirp" if role == "platform" else None, name=role)
        for role in ROLES
    }


def post_reports(worker: Worker, key: str, reports: list[dict[str, Any]]) -> tuple[int, Any]:
    return worker.http("POST", "/v1/reports", key, orjson.dumps(reports))


def test_every_role_against_every_endpoint(deployment: Deployment) -> None:
    keys = keys_for(deployment)
    worker = deployment.worker()
    worker.wait_ready()
    for method, path, body, allowed in ENDPOINTS:
        assert worker.http(method, path, None, body)[0] == 401, path
        assert worker.http(method, path, "lw_00000000_not-a-key", body)[0] == 401, path
        for role in ROLES:
            status, answer = worker.http(method, path, keys[role], body)
            if role in allowed:
                assert status not in (401, 403), (role, path, status, answer)
            else:
                assert status == 403, (role, path, status, answer)
                assert role in answer["error"]
    for open_path in ("/healthz", "/metrics", "/", "/console/app.js"):
        assert worker.http("GET", open_path)[0] == 200, open_path

    revoked = deployment.cli("keys", "revoke", keys["analyst"].split("_")[1])
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 10
    while worker.http("GET", "/v1/whoami", keys["analyst"])[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    listed = deployment.cli("keys", "list").stdout
    # The secret is all that follows the key id: token_urlsafe can itself contain "_".
    assert keys["admin"].split("_", 2)[2] not in listed  # secrets are never shown again

    audit = [orjson.loads(r.value) for r in deployment.read(deployment.settings.audit_topic)]
    reads = [e for e in audit if e["role"] == "analyst" and e["action"] == "GET actor"]
    assert reads and reads[0]["target"] == f"/v1/actors/{ACTOR}"
    assert reads[0]["key_id"] == keys["analyst"].split("_")[1]


def test_intake_limits_scoping_bad_json_and_idempotent_reposts(deployment: Deployment) -> None:
    keys = keys_for(deployment)
    worker = deployment.worker()
    worker.wait_ready()
    chirp = keys["platform"]

    assert worker.http("POST", "/v1/reports", chirp, b"{not json")[0] == 400
    assert worker.http("POST", "/v1/reports", chirp, b'{"a": 1}')[0] == 400
    assert worker.http("POST", "/v1/reports", chirp, b"[]")[0] == 400
    status, answer = post_reports(
        worker, chirp, [make_report(report_id=f"x{i}") for i in range(1001)]
    )
    assert status == 400 and "1000" in answer["error"]
    huge = b"[" + b",".join([orjson.dumps(make_report(text="x" * 4000))] * 300) + b"]"
    assert len(huge) > 1024 * 1024
    assert worker.http("POST", "/v1/reports", chirp, huge)[0] == 413

    foreign = make_report("someone", platform="pixgram", report_id="p-1")
    status, answer = post_reports(worker, chirp, [make_report(report_id="c-0"), foreign])
    assert status == 403 and "pixgram" in answer["error"]

    batch = [
        make_report("tom", "v1", "norfolk", report_id="c-1"),
        {"report_id": "c-2", "platform": "chirp"},
        "not an object",
        make_report("tom", "v1", "norfolk", report_id="c-1"),
    ]
    status, answer = post_reports(worker, chirp, batch)
    assert status == 202
    assert [r["status"] for r in answer["results"]] == [
        "accepted",
        "rejected",
        "rejected",
        "duplicate",
    ]
    assert answer["results"][1]["reason"] == "missing_field"
    assert answer["results"][2]["reason"] == "not_object"
    # The c-0 of the refused request was not accepted then, so it is new now.
    status, answer = post_reports(worker, chirp, [make_report(report_id="c-0"), batch[0]])
    assert [r["status"] for r in answer["results"]] == ["accepted", "duplicate"]

    # Re-posting the demo case changes nothing downstream: same alerts, no new edges.
    demo = [orjson.loads(line) for line in demo_reports()]
    assert post_reports(worker, keys["admin"], demo)[1]["accepted"] == 5
    deployment.wait_for_alerts(2)
    assert post_reports(worker, keys["admin"], demo)[1]["duplicates"] == 5
    deployment.push(demo_reports(), name="redelivered.jsonl")  # past the journal, via Kafka
    time.sleep(3)
    assert len(deployment.alerts()) == 2
    assert 'linkwatch_reports_total{outcome="duplicate"} 5.0' in worker.metrics()


def test_alert_lifecycle_survives_a_restart(deployment: Deployment) -> None:
    keys = keys_for(deployment)
    worker = deployment.worker()
    worker.wait_ready()
    deployment.push(demo_reports())
    level3, level4 = sorted(deployment.wait_for_alerts(2), key=lambda a: a["level"])
    responder = keys["responder"]

    status, view = worker.http(
        "POST", f"/v1/alerts/{level4['alert_id']}/acknowledge", responder, b""
    )
    assert status == 200 and view["status"]["state"] == "acknowledged"
    assert view["status"]["by"] == "responder"
    assert (
        worker.http("POST", f"/v1/alerts/{level4['alert_id']}/acknowledge", responder, b"")[0]
        == 409
    )
    assert (
        worker.http("POST", f"/v1/alerts/{level3['alert_id']}/dismiss", responder, b"{}")[0] == 400
    )
    too_long = orjson.dumps({"note": "x" * (MAX_NOTE + 1)})
    status, answer = worker.http(
        "POST", f"/v1/alerts/{level3['alert_id']}/dismiss", responder, too_long
    )
    assert status == 400 and str(MAX_NOTE) in answer["error"]
    note = orjson.dumps({"note": "same person as the level-4 alert"})
    status, view = worker.http("POST", f"/v1/alerts/{level3['alert_id']}/dismiss", responder, note)
    assert status == 200 and view["status"]["note"] == "same person as the level-4 alert"

    worker.kill()
    restarted = deployment.worker()
    restarted.wait_ready()
    status, answer = restarted.http("GET", "/v1/alerts?state=acknowledged,dismissed", responder)
    states = {alert["alert_id"]: alert["status"]["state"] for alert in answer["alerts"]}
    assert states == {level4["alert_id"]: "acknowledged", level3["alert_id"]: "dismissed"}
    history = restarted.http("GET", f"/v1/alerts/{level4['alert_id']}", responder)[1]["status"]
    assert [step["state"] for step in history["history"]] == ["open", "acknowledged"]
    assert restarted.http("GET", "/v1/alerts?state=open", responder)[1]["total"] == 0


def test_snapshots_in_every_format_read_back_equal_to_the_live_graph(
    deployment: Deployment,
) -> None:
    keys = keys_for(deployment)
    worker = deployment.worker()
    worker.wait_ready()
    messages = [
        *demo_reports(),
        *(orjson.dumps(make_report(f"local-{i}", f"w{i}", "kent", at=timedelta(days=i)))
          for i in range(5)),
    ]  # fmt: skip
    deployment.push(messages)
    alerts = deployment.wait_for_alerts(2)
    # The alerts can come before the other reports are applied (another partition).
    deadline = time.monotonic() + 60
    while (
        f'linkwatch_reports_total{{outcome="accepted"}} {len(messages)}.0' not in worker.metrics()
    ):
        assert time.monotonic() < deadline, worker.metrics()
        time.sleep(0.2)
    # The graph the worker holds, rebuilt in-process from the same reports in the order its
    # resolver saw them (the identity topic: packed rows, pseudonymised, several a message).
    by_key = {(d["platform"], d["report_id"]): m for m in messages if (d := orjson.loads(m))}
    order = [
        by_key[(row[1], row[0])]
        for record in deployment.read(deployment.settings.identity_topic)
        for row in orjson.loads(record.value)
    ]
    live = Pipeline(deployment.settings.secret_bytes, deployment.settings.window_seconds,
                    deployment.settings.rule(),
                    pseudonyms=deployment.settings.pseudonyms())  # fmt: skip
    live.feed(order, now=0.0)
    levels = {alerts[0]["actor_id"]: max(a["level"] for a in alerts)}
    expected = to_networkx([live.partitions[0].graph], levels)
    analyst = keys["analyst"]

    status, document = worker.http("GET", "/v1/graph/snapshot?format=json", analyst)
    assert status == 200
    assert _same(nx.node_link_graph(document, directed=True, edges="edges"), expected)
    for fmt, read in (("graphml", nx.read_graphml), ("gexf", nx.read_gexf)):
        status, data = worker.http("GET", f"/v1/graph/snapshot?format={fmt}", analyst)
        assert status == 200, data
        assert _same(read(io.BytesIO(data)), expected), fmt

    status, document = worker.http("GET", "/v1/graph/snapshot?region=kent&min_regions=3", analyst)
    assert _same(nx.node_link_graph(document, directed=True, edges="edges"),
                 filtered(expected, region="kent", min_regions=3))  # fmt: skip
    assert status == 200 and len(document["edges"]) == 1

    path = deployment.tmp_path / "snapshot.gexf"
    result = deployment.cli("snapshot", "--format", "gexf", "-o", str(path), "--key", analyst,
                            "--url", f"http://127.0.0.1:{worker.web_port}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _same(nx.read_gexf(path), expected)

    actor = alerts[0]["actor_id"]
    status, detail = worker.http("GET", f"/v1/actors/{actor}", analyst)
    assert status == 200 and len(detail["accounts"]) == 4 and len(detail["alerts"]) == 2
    status, neighbourhood = worker.http("GET", f"/v1/actors/{actor}/graph?hops=1", analyst)
    assert status == 200 and len(neighbourhood["nodes"]) == 5
    assert worker.http("GET", f"/v1/actors/{actor}/graph?hops=9", analyst)[0] == 400


def _same(got: nx.Graph, expected: nx.DiGraph) -> bool:
    """Same nodes, edges and attribute values (GEXF adds its own `label` handling)."""
    if set(got.nodes) != set(expected.nodes) or set(got.edges) != set(expected.edges):
        return False
    for node, data in expected.nodes(data=True):
        if {k: got.nodes[node].get(k) for k in data} != data:
            return False
    for u, v, data in expected.edges(data=True):
        if {k: got.edges[u, v].get(k) for k in data} != data:
            return False
    return True


def test_a_key_over_its_rate_is_refused_with_429_and_other_keys_are_not(
    deployment: Deployment,
) -> None:
    worker = deployment.worker(LINKWATCH_API_RATE="1")
    worker.wait_ready()
    key, other = deployment.key("responder"), deployment.key("analyst")
    # A worker learns a new key from the keys topic, a moment after it is minted (up to the
    # followers' fetch wait, streams/shared.py). Once it knows the later one it knows both
    # (one partition, in order). A 401 takes nothing from a bucket; this 200 takes one of
    # the other key's two.
    deadline = time.monotonic() + 30
    while worker.http("GET", "/v1/whoami", other)[0] == 401:
        assert time.monotonic() < deadline, "the worker never learned the new keys"
        time.sleep(0.1)
    answers = [worker.http("GET", "/v1/whoami", key) for _ in range(20)]
    statuses = [status for status, _ in answers]
    assert statuses[:2] == [200, 200]  # a burst of twice the rate
    assert 429 in statuses
    refused = next(body for status, body in answers if status == 429)
    assert refused["retry_after_s"] > 0 and "requests a second" in refused["error"]
    assert worker.http("GET", "/v1/whoami", other)[0] == 200  # the limit is per key
