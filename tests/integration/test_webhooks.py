"""Webhooks on a real worker into a real HTTP server: signed, retried, final on a 4xx."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from streams.demo import demo_reports
from tests.integration.conftest import Deployment

SECRET = "webhook-test-secret"


class Receiver:
    """Answers 503 to the first two attempts at each alert on /flaky, 400 always on /broken."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                attempt = int(self.headers["X-Linkwatch-Attempt"])
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = 400 if self.path == "/broken" else (503 if attempt <= 2 else 200)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, path: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["path"] == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


def test_alerts_are_posted_signed_and_retried_until_accepted(
    deployment: Deployment, receiver: Receiver
) -> None:
    worker = deployment.worker(
        LINKWATCH_WEBHOOK_URLS=f"{receiver.url}/flaky,{receiver.url}/broken",
        LINKWATCH_WEBHOOK_SECRET=SECRET,
    )
    deployment.push(demo_reports())
    alerts = {alert["alert_id"] for alert in deployment.wait_for_alerts(2)}

    deadline = time.monotonic() + 60
    while len(receiver.received("/flaky")) < 6:  # two alerts, three attempts each
        assert time.monotonic() < deadline, receiver.requests
        time.sleep(0.2)
    flaky = receiver.received("/flaky")
    for alert_id in alerts:
        tries = [r for r in flaky if r["headers"]["X-Linkwatch-Alert-Id"] == alert_id]
        assert [r["headers"]["X-Linkwatch-Attempt"] for r in tries] == ["1", "2", "3"]
    for request in flaky:
        body, header = request["body"], request["headers"]["X-Linkwatch-Signature"]
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(header, f"sha256={expected}")
        assert orjson.loads(body)["alert_id"] == request["headers"]["X-Linkwatch-Alert-Id"]
    # A 400 is final: one attempt per alert, no retries.
    assert len(receiver.received("/broken")) == 2
    metrics = worker.metrics()
    assert 'linkwatch_webhook_deliveries_total{outcome="delivered"} 2.0' in metrics
    assert 'linkwatch_webhook_deliveries_total{outcome="retried"} 4.0' in metrics
    assert 'linkwatch_webhook_deliveries_total{outcome="failed"} 2.0' in metrics
