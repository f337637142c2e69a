"""Prometheus metrics of one worker, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from graph.contract import REJECTION_REASONS
from graph.window import Outcome

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reports = Counter(
            "linkwatch_reports",
            "Reports by outcome: accepted, duplicate, too_old (older than the window), rejected.",
            ["outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "linkwatch_rejections",
            "Rejected messages by reason; each went to the rejected topic with its bytes.",
            ["reason"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "linkwatch_alerts",
            "Alerts raised (published to the alerts topic), by kind: serial or brigade.",
            ["kind"],
            registry=self.registry,
        )
        self.merges = Counter(
            "linkwatch_actor_merges",
            "Actors merged into another after a shared signal linked their accounts.",
            registry=self.registry,
        )
        self.hubs = Counter(
            "linkwatch_signal_hubs",
            "Signal values found on more accounts than max_accounts_per_signal; they no "
            "longer link.",
            ["signal"],
            registry=self.registry,
        )
        self.accounts = Gauge(
            "linkwatch_accounts",
            "Offender accounts the alias resolver knows.",
            registry=self.registry,
        )
        self.api = Counter(
            "linkwatch_api_requests",
            "HTTP API requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "linkwatch_webhook_deliveries",
            "Webhook deliveries by outcome: delivered, retried (one per retry), failed.",
            ["outcome"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "linkwatch_internal_errors",
            "Unreadable records on linkwatch's own internal topics (a bug, never user input).",
            registry=self.registry,
        )
        self.live_edges = Gauge(
            "linkwatch_live_edges",
            "Actor-victim edges inside the window, over the partitions this worker owns.",
            registry=self.registry,
        )
        self.actors = Gauge(
            "linkwatch_actors", "Actors with at least one live edge.", registry=self.registry
        )
        self.latency = Histogram(
            "linkwatch_processing_latency_seconds",
            "From a report's arrival in Kafka (its message timestamp) to its graph update.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.handoffs = Counter(
            "linkwatch_local_handoffs",
            "Messages this worker produced to a partition it owns and applied as soon as Kafka "
            "acknowledged them, before its consumer fetched them back (LINKWATCH_LOCAL_HANDOFF).",
            ["topic"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "linkwatch_consumer_lag",
            "Messages behind the partition's end, per topic and partition this worker owns.",
            ["topic", "partition"],
            registry=self.registry,
        )
        # Every label value exists from the start, so a dashboard sees zeros, not gaps.
        for outcome in (*Outcome, "rejected"):
            self.reports.labels(outcome=str(outcome))
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        for kind in ("serial", "brigade"):
            self.alerts.labels(kind=kind)

    def reject(self, reason: str) -> None:
        self.reports.labels(outcome="rejected").inc()
        self.rejections.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
