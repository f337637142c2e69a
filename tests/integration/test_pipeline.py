"""The whole path on a real broker: push -> intake -> graph -> alerts, with restarts."""

from __future__ import annotations

from datetime import timedelta

from tests.factories import encode, make_report, serial_case
from tests.integration.conftest import Deployment

BAD_LINES = [b"{not json", b'{"report_id": "x"}', b"\xff\xfe", b"[1,2,3]"]


def test_reports_become_one_alert_and_bad_lines_are_rejected_with_reasons(
    deployment: Deployment,
) -> None:
    worker = deployment.worker()
    case = serial_case("tom.ashby", regions=3)
    output = deployment.push([BAD_LINES[0], *case[:2], *BAD_LINES[1:], case[2]])
    assert "sent 7 reports" in output

    [alert] = deployment.wait_for_alerts(1)
    assert alert["level"] == 3
    assert alert["regions"] == ["kent", "norfolk", "suffolk"]
    assert alert["accounts"] == ["chirp:tom.ashby"]
    assert alert["victim_count"] == 3
    assert alert["alert_id"] == f"{alert['actor_id']}-L3"
    assert "tom.ashby" not in alert["actor_id"]

    rejected = deployment.read(deployment.settings.rejected_topic)
    assert sorted(record.value for record in rejected) == sorted(BAD_LINES)
    reasons = {record.value: dict(record.headers)["linkwatch.reason"] for record in rejected}
    assert reasons == {
        b"{not json": b"not_json",
        b'{"report_id": "x"}': b"missing_field",
        b"\xff\xfe": b"not_utf8",
        b"[1,2,3]": b"not_object",
    }

    worker.wait_owning(4)
    metrics = worker.metrics()
    assert 'linkwatch_reports_total{outcome="accepted"} 3.0' in metrics
    assert 'linkwatch_reports_total{outcome="rejected"} 4.0' in metrics
    assert 'linkwatch_rejections_total{reason="not_utf8"} 1.0' in metrics
    assert 'linkwatch_alerts_total{kind="serial"} 1.0' in metrics
    assert "linkwatch_live_edges 3.0" in metrics


def test_restarts_and_redelivery_never_duplicate_an_alert_and_keep_the_graph(
    deployment: Deployment,
) -> None:
    case = serial_case("tom.ashby", regions=3)
    worker = deployment.worker()
    deployment.push(case)
    deployment.wait_for_alerts(1)
    # Killed at once, most likely before its offsets were committed: the restarted worker
    # processes the same reports again and must find their alert already published.
    worker.kill()

    fourth = encode(make_report("tom.ashby", "victim-9", "devon", at=timedelta(days=90)))
    restarted = deployment.worker()
    deployment.push([*case, fourth], name="redelivered.jsonl")
    alerts = deployment.wait_for_alerts(2)
    # Level 4 needs the three regions from before the crash: the graph was rebuilt.
    assert [alert["level"] for alert in alerts] == [3, 4]

    assert restarted.stop() == 0
    fifth = encode(make_report("tom.ashby", "victim-10", "essex", at=timedelta(days=95)))
    deployment.worker()
    deployment.push([fourth, fifth], name="after-graceful-stop.jsonl")
    alerts = deployment.wait_for_alerts(3)
    assert [alert["level"] for alert in alerts] == [3, 4, 5]
    assert len({alert["alert_id"] for alert in alerts}) == 3
    assert alerts[-1]["regions"] == ["devon", "essex", "kent", "norfolk", "suffolk"]


def test_reports_older_than_the_window_do_not_count(broker: object, tmp_path: object) -> None:
    # One input partition: with more, the watermark waits for every partition to report
    # (or for 10,000 reports to pass) before anything expires (graph/watermark.py).
    deployed = Deployment(broker, tmp_path, window_days=30, partitions=1)  # type: ignore[arg-type]
    try:
        deployed.worker()
        messages = [
            encode(make_report("tom", "v1", "norfolk", at=timedelta(days=0))),
            encode(make_report("tom", "v2", "suffolk", at=timedelta(days=10))),
            encode(make_report("tom", "v3", "kent", at=timedelta(days=45))),  # v1 expired
            encode(make_report("ann", "w1", "norfolk", at=timedelta(days=46))),
            encode(make_report("ann", "w2", "suffolk", at=timedelta(days=47))),
            encode(make_report("ann", "w3", "kent", at=timedelta(days=48))),
        ]
        deployed.push(messages)
        [alert] = deployed.wait_for_alerts(1)
        assert alert["accounts"] == ["chirp:ann"]
    finally:
        deployed.close()
