"""The web console in a real browser against a real worker: sign in, a live alert, acknowledge."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.demo import demo_reports
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
NOTE = "Escalated to chirp; watching for a fifth account."


def browser_stack() -> tuple[Any, Any]:
    """Playwright and Debian's Chromium. Missing either fails the test: it never skips."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as error:
        pytest.fail(f"the console test needs playwright (pip install playwright): {error}")
    if not CHROMIUM.exists():
        pytest.fail(f"the console test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright, expect


def get_json(base: str, path: str, key: str) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


def test_a_responder_sees_an_alert_arrive_live_acknowledges_it_and_is_signed_out_on_revocation(
    deployment: Deployment,
) -> None:
    sync_playwright, expect = browser_stack()
    worker = deployment.worker()
    worker.wait_owning(4)
    created = deployment.cli("keys", "create", "--role", "responder", "--name", "Console Test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    base = f"http://127.0.0.1:{worker.web_port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            page.goto(base + "/")
            page.get_by_test_id("login-key").fill(key)
            page.screenshot(path=str(ARTIFACTS / "01-login.png"))
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("whoami")).to_contain_text("Console Test")
            expect(page.get_by_test_id("whoami")).to_contain_text("responder")
            # The first poll has answered (an empty queue) before any report exists, so the
            # alerts below can only arrive through the live updates.
            expect(page.get_by_test_id("alert-queue")).to_be_visible()
            expect(page.locator("#queue-count")).to_have_text("0")

            deployment.push(demo_reports())
            rows = page.get_by_test_id("alert-row")
            expect(rows.first).to_be_visible(timeout=60_000)
            deployment.wait_for_alerts(2)
            expect(rows).to_have_count(2, timeout=10_000)
            # Ordered by the server, higher level first; both marked as new arrivals.
            top = rows.first
            alert_id = top.get_attribute("data-alert-id")
            assert alert_id is not None and alert_id.endswith("-L4"), alert_id
            expect(rows.nth(1)).to_have_attribute("data-alert-id", alert_id[:-1] + "3")
            expect(top.get_by_test_id("alert-state")).to_have_text("open")
            expect(top.locator(".new-tag")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "02-queue.png"))

            top.click()
            alert_page = page.get_by_test_id("alert-page")
            expect(alert_page).to_be_visible()
            expect(page.get_by_test_id("alert-reason")).to_contain_text("4 regions")
            expect(alert_page.get_by_test_id("alert-state")).to_have_text("open")
            expect(page.get_by_test_id("actor-accounts").locator("li")).to_have_count(4)
            expect(page.get_by_test_id("alert-links")).to_contain_text("shared phone_hash")
            expect(page.get_by_test_id("timeline")).to_be_visible()
            assert page.get_by_test_id("timeline").locator("circle").count() >= 4
            graph = page.get_by_test_id("actor-graph")
            expect(graph).to_be_visible()
            expect(graph.locator('[data-testid="graph-node"][data-kind="actor"]')).to_have_count(1)
            assert graph.locator('[data-testid="graph-node"][data-kind="victim"]').count() >= 4
            page.screenshot(path=str(ARTIFACTS / "03-alert.png"))
            page.get_by_test_id("timeline").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "03b-timeline-and-graph.png"))

            page.get_by_test_id("note").fill(NOTE)
            page.get_by_test_id("action-acknowledge").click()
            expect(alert_page.get_by_test_id("alert-state")).to_have_text("acknowledged")
            expect(page.get_by_test_id("action-error")).to_have_text("")
            expect(page.get_by_test_id("action-acknowledge")).to_be_disabled()
            row = page.locator(f'[data-testid="alert-row"][data-alert-id="{alert_id}"]')
            expect(row.get_by_test_id("alert-state")).to_have_text("acknowledged")
            expect(alert_page).to_contain_text(NOTE)
            page.screenshot(path=str(ARTIFACTS / "04-acknowledged.png"))

            # The move is the worker's, not just the page's.
            status = get_json(base, f"/v1/alerts/{alert_id}", key)["status"]
            assert (status["state"], status["by"], status["note"]) == (
                "acknowledged",
                "Console Test",
                NOTE,
            )

            # A revoked key reaches the worker within a second; the next poll gets 401.
            key_id = key.split("_")[1]
            revoked = deployment.cli("keys", "revoke", key_id)
            assert revoked.returncode == 0, revoked.stderr
            expect(page.get_by_test_id("login-key")).to_be_visible(timeout=15_000)
            expect(page.locator("#login-message")).to_contain_text("signed out")
            expect(page.get_by_test_id("alert-queue")).to_be_hidden()
            page.screenshot(path=str(ARTIFACTS / "05-signed-out.png"))
            assert page_errors == []
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            print(worker.tail())
            raise
        finally:
            browser.close()
