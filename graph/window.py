"""The rolling actor-victim graph of one partition: event-time window, expiry, and the rule."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from graph.contract import Report
from graph.rules import Alert, CrossRegionRule, describe

__all__ = ["Actor", "Applied", "Edge", "Outcome", "RollingGraph"]


class Outcome(StrEnum):
    """What applying one valid report did to the graph."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"


@dataclass(slots=True)
class Edge:
    """Everything one actor did to one victim inside the window."""

    victim: str
    region: str
    region_time: float
    first_seen: float
    last_seen: float
    regions: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    report_ids: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Actor:
    """One actor's live edges, and how many of its victims are in each region now."""

    actor_id: str
    edges: dict[str, Edge] = field(default_factory=dict)
    victims_by_region: dict[str, int] = field(default_factory=dict)

    def accounts(self) -> set[str]:
        return set().union(*(edge.accounts for edge in self.edges.values()))

    def count_victim(self, region: str, delta: int) -> None:
        count = self.victims_by_region.get(region, 0) + delta
        if count:
            self.victims_by_region[region] = count
        else:
            del self.victims_by_region[region]


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    alert: Alert | None = None


class RollingGraph:
    """The state one worker keeps for one partition of actor-keyed reports.

    Time is event time only: the watermark is the newest `reported_at` seen, and an edge
    expires once its last report is more than `window_seconds` older than the watermark.
    Everything here is deterministic for a given order of reports, which is what lets a
    worker rebuild it by replaying its partition after a restart.
    """

    def __init__(self, window_seconds: float, rule: CrossRegionRule) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.rule = rule
        self.watermark = -math.inf
        self.live_edges = 0
        self._actors: dict[str, Actor] = {}
        # Highest level alerted per actor; kept after an actor expires, so that an alert id
        # (actor + level) is never raised twice.
        self._raised: dict[str, int] = {}
        # (last_seen when pushed, actor_id, victim): one entry per edge, re-pushed lazily.
        self._expiry: list[tuple[float, str, str]] = []

    @property
    def actor_count(self) -> int:
        return len(self._actors)

    def actors(self) -> Iterator[Actor]:
        return iter(self._actors.values())

    def actor(self, actor_id: str) -> Actor | None:
        return self._actors.get(actor_id)

    def raised_level(self, actor_id: str) -> int:
        return self._raised.get(actor_id, 0)

    def mark_raised(self, actor_id: str, level: int) -> None:
        """Record an alert that already exists (read back from the alerts topic)."""
        if level > self._raised.get(actor_id, 0):
            self._raised[actor_id] = level

    def apply(self, actor_id: str, report: Report, now: float) -> Applied:
        """Add one report to the graph and check the rule for its actor.

        `now` is wall-clock time, used only for the alert's `raised_at`.
        """
        moment = report.event_time
        if moment > self.watermark:
            self.watermark = moment
            self._expire(moment - self.window_seconds)
        elif moment < self.watermark - self.window_seconds:
            return Applied(Outcome.TOO_OLD)

        actor = self._actors.get(actor_id)
        if actor is None:
            actor = self._actors[actor_id] = Actor(actor_id)
        edge = actor.edges.get(report.victim_key)
        if edge is None:
            edge = Edge(
                victim=report.victim_key,
                region=report.victim_region,
                region_time=moment,
                first_seen=moment,
                last_seen=moment,
            )
            actor.edges[report.victim_key] = edge
            actor.count_victim(edge.region, +1)
            heapq.heappush(self._expiry, (moment, actor_id, report.victim_key))
            self.live_edges += 1
        elif report.report_id in edge.report_ids:
            return Applied(Outcome.DUPLICATE)
        else:
            edge.first_seen = min(edge.first_seen, moment)
            edge.last_seen = max(edge.last_seen, moment)
            if moment >= edge.region_time and report.victim_region != edge.region:
                actor.count_victim(edge.region, -1)
                actor.count_victim(report.victim_region, +1)
                edge.region = report.victim_region
            edge.region_time = max(edge.region_time, moment)
        edge.regions.add(report.victim_region)
        edge.categories.add(report.category)
        edge.report_ids.add(report.report_id)
        edge.accounts.add(report.offender_key)
        return Applied(Outcome.ACCEPTED, self._check(actor, now))

    def _check(self, actor: Actor, now: float) -> Alert | None:
        level = self.rule.level(len(actor.victims_by_region))
        if level <= self._raised.get(actor.actor_id, 0):
            return None
        self._raised[actor.actor_id] = level
        return self._alert(actor, level, now)

    def _alert(self, actor: Actor, level: int, now: float) -> Alert:
        edges = list(actor.edges.values())
        accounts = actor.accounts()
        first_seen = min(edge.first_seen for edge in edges)
        last_seen = max(edge.last_seen for edge in edges)
        victims_by_region = dict(sorted(actor.victims_by_region.items()))
        return Alert(
            alert_id=self.rule.alert_id(actor.actor_id, level),
            actor_id=actor.actor_id,
            level=level,
            regions=tuple(victims_by_region),
            victim_count=len(edges),
            victims_by_region=victims_by_region,
            accounts=tuple(sorted(accounts)),
            platforms=tuple(sorted({account.split(":", 1)[0] for account in accounts})),
            categories=tuple(sorted(set().union(*(edge.categories for edge in edges)))),
            report_ids=tuple(
                sorted(
                    f"{edge.victim.split(':', 1)[0]}:{report_id}"
                    for edge in edges
                    for report_id in edge.report_ids
                )
            ),
            first_seen=first_seen,
            last_seen=last_seen,
            raised_at=now,
            reason=describe(len(accounts), victims_by_region, first_seen, last_seen),
        )

    def _expire(self, cutoff: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] < cutoff:
            _, actor_id, victim = heapq.heappop(expiry)
            actor = self._actors[actor_id]
            edge = actor.edges[victim]
            if edge.last_seen >= cutoff:
                heapq.heappush(expiry, (edge.last_seen, actor_id, victim))
                continue
            del actor.edges[victim]
            actor.count_victim(edge.region, -1)
            self.live_edges -= 1
            if not actor.edges:
                del self._actors[actor_id]
