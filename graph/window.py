"""The rolling actor-victim graph of one partition: event-time window, expiry, merges, the rule."""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from graph.aliases import Link, opener_of
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

    def merge(self, other: Edge) -> None:
        """Fold another record of the same actor-victim pair in (idempotent)."""
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        if other.region_time > self.region_time:
            self.region, self.region_time = other.region, other.region_time
        self.regions |= other.regions
        self.categories |= other.categories
        self.report_ids |= other.report_ids
        self.accounts |= other.accounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "victim": self.victim,
            "region": self.region,
            "region_time": self.region_time,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "regions": sorted(self.regions),
            "categories": sorted(self.categories),
            "report_ids": sorted(self.report_ids),
            "accounts": sorted(self.accounts),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Edge:
        return cls(
            victim=document["victim"],
            region=document["region"],
            region_time=float(document["region_time"]),
            first_seen=float(document["first_seen"]),
            last_seen=float(document["last_seen"]),
            regions=set(document["regions"]),
            categories=set(document["categories"]),
            report_ids=set(document["report_ids"]),
            accounts=set(document["accounts"]),
        )


@dataclass(slots=True)
class Actor:
    """One actor: live edges, the links that joined its accounts, and openers they used."""

    actor_id: str
    edges: dict[str, Edge] = field(default_factory=dict)
    links: dict[Link, None] = field(default_factory=dict)  # insertion-ordered set
    openers: dict[str, set[str]] = field(default_factory=dict)
    merged: set[str] = field(default_factory=set)
    brigade_raised: bool = False

    def accounts(self) -> set[str]:
        return set().union(*(edge.accounts for edge in self.edges.values()))

    def regions(self) -> set[str]:
        return {edge.region for edge in self.edges.values()}

    def victims(self) -> list[tuple[float, str]]:
        return [(edge.first_seen, edge.region) for edge in self.edges.values()]

    def shared_openers(self) -> list[dict[str, Any]]:
        shared = [
            {"opener": opener, "accounts": len(accounts)}
            for opener, accounts in self.openers.items()
            if len(accounts) > 1
        ]
        return sorted(shared, key=lambda item: (-item["accounts"], item["opener"]))

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to move this actor into another (an `absorb` record)."""
        return {
            "actor_id": self.actor_id,
            "edges": [edge.to_dict() for edge in self.edges.values()],
            "links": [link.to_dict() for link in self.links],
            "openers": {opener: sorted(accounts) for opener, accounts in self.openers.items()},
            "merged": sorted(self.merged),
        }


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    alerts: tuple[Alert, ...] = ()


class RollingGraph:
    """The state one worker keeps for one partition of actor-keyed records.

    Time is event time only. Each operation carries a watermark, the newest `reported_at`
    seen (by the resolver, over the whole stream; standalone, by this graph), and an actor
    is judged with the edges whose last report is at most `window_seconds` older than it.
    Expired edges are also removed eagerly, to return memory, except for `pinned` actors,
    whose older records are still to come. Everything here is deterministic for a given
    order of records, which is what lets a worker rebuild it by replaying its partition.
    """

    def __init__(self, window_seconds: float, rule: CrossRegionRule) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.rule = rule
        self.watermark = -math.inf
        self.live_edges = 0
        self._actors: dict[str, Actor] = {}
        # Highest serial level alerted per actor; kept after an actor expires or merges,
        # so that an alert id (actor + level) is never raised twice.
        self._raised: dict[str, int] = {}
        self._brigades: set[str] = set()
        # Actors merged away on this partition, and the actor each now lives in.
        self._forward: dict[str, str] = {}
        # (last_seen when pushed, actor_id, victim): one entry per edge, re-pushed lazily.
        self._expiry: list[tuple[float, str, str]] = []
        self.pinned: Container[str] = frozenset()

    @property
    def actor_count(self) -> int:
        return len(self._actors)

    def actors(self) -> Iterator[Actor]:
        return iter(self._actors.values())

    def actor(self, actor_id: str) -> Actor | None:
        return self._actors.get(actor_id)

    def raised_level(self, actor_id: str) -> int:
        return self._raised.get(actor_id, 0)

    def forwarded_to(self, actor_id: str) -> str | None:
        return self._forward.get(actor_id)

    def mark_raised(self, alert: dict[str, Any]) -> None:
        """Record an alert that already exists (read back from the alerts topic)."""
        actor_id = alert["actor_id"]
        if alert.get("kind", "serial") == "brigade":
            self._brigades.add(actor_id)
        elif int(alert["level"]) > self._raised.get(actor_id, 0):
            self._raised[actor_id] = int(alert["level"])

    def apply(
        self,
        actor_id: str,
        report: Report,
        now: float,
        links: Iterable[Link] = (),
        watermark: float | None = None,
    ) -> Applied:
        """Add one report to the graph and check the rule for its actor.

        `now` is wall-clock time, used only for the alerts' `raised_at`.
        """
        moment = report.event_time
        cutoff = self._advance(
            actor_id, max(self.watermark, moment) if watermark is None else watermark
        )
        if moment < cutoff:
            return Applied(Outcome.TOO_OLD)
        actor = self._actors.get(actor_id)
        if actor is None:
            actor = self._actors[actor_id] = Actor(actor_id)
        for link in links:
            actor.links[link] = None
        edge = actor.edges.get(report.victim_key)
        if edge is not None and report.report_id in edge.report_ids:
            return Applied(Outcome.DUPLICATE)
        self._add_edge(
            actor,
            Edge(
                victim=report.victim_key,
                region=report.victim_region,
                region_time=moment,
                first_seen=moment,
                last_seen=moment,
                regions={report.victim_region},
                categories={report.category},
                report_ids={report.report_id},
                accounts={report.offender_key},
            ),
        )
        opener = opener_of(report.text)
        if opener is not None:
            actor.openers.setdefault(opener, set()).add(report.offender_key)
        return Applied(Outcome.ACCEPTED, self._check(actor, now))

    def detach(
        self, absorbed: str, into: str, watermark: float | None = None
    ) -> dict[str, Any] | None:
        """Remove actor `absorbed` (merged into `into`); returns its state to absorb there."""
        if watermark is not None:
            self._advance(absorbed, watermark)
        self._forward[absorbed] = into
        actor = self._actors.pop(absorbed, None)
        if actor is None:
            return None
        self.live_edges -= len(actor.edges)
        return actor.to_dict()

    def absorb(
        self, into: str, state: dict[str, Any], now: float, watermark: float | None = None
    ) -> tuple[Alert, ...]:
        """Fold a merged actor's state into actor `into` and check the rule at once."""
        cutoff = self._advance(into, self.watermark if watermark is None else watermark)
        actor = self._actors.get(into)
        if actor is None:
            actor = self._actors[into] = Actor(into)
        actor.merged.add(state["actor_id"])
        actor.merged.update(state["merged"])
        for link in state["links"]:
            actor.links[Link.from_dict(link)] = None
        for opener, accounts in state["openers"].items():
            actor.openers.setdefault(opener, set()).update(accounts)
        for document in state["edges"]:
            edge = Edge.from_dict(document)
            if edge.last_seen >= cutoff:
                self._add_edge(actor, edge)
        if not actor.edges:
            del self._actors[into]
            return ()
        return self._check(actor, now)

    def _advance(self, actor_id: str, watermark: float) -> float:
        """Bring the graph to `watermark` and the actor to its own; returns the cutoff."""
        cutoff = watermark - self.window_seconds
        if watermark > self.watermark:
            self.watermark = watermark
            self._expire(cutoff)
        if actor_id in self.pinned or watermark < self.watermark:
            self._expire_actor(actor_id, cutoff)
        return cutoff

    def _add_edge(self, actor: Actor, edge: Edge) -> None:
        existing = actor.edges.get(edge.victim)
        if existing is None:
            actor.edges[edge.victim] = edge
            heapq.heappush(self._expiry, (edge.last_seen, actor.actor_id, edge.victim))
            self.live_edges += 1
        else:
            existing.merge(edge)

    def _check(self, actor: Actor, now: float) -> tuple[Alert, ...]:
        alerts = []
        victims = actor.victims()
        level = self.rule.level(victims)
        if level > self._raised.get(actor.actor_id, 0):
            self._raised[actor.actor_id] = level
            alerts.append(self._alert(actor, "serial", level, list(actor.edges.values()), now))
        if len(victims) >= self.rule.brigade_victims and actor.actor_id not in self._brigades:
            burst = self.rule.largest_episode(victims)
            if len(burst) >= self.rule.brigade_victims:
                self._brigades.add(actor.actor_id)
                in_burst = {moment for moment, _ in burst}
                edges = [e for e in actor.edges.values() if e.first_seen in in_burst]
                level = len({edge.region for edge in edges})
                alerts.append(self._alert(actor, "brigade", level, edges, now))
        return tuple(alerts)

    def _alert(self, actor: Actor, kind: str, level: int, edges: list[Edge], now: float) -> Alert:
        accounts = set().union(*(edge.accounts for edge in edges))
        first_seen = min(edge.first_seen for edge in edges)
        last_seen = max(edge.last_seen for edge in edges)
        victims_by_region: dict[str, int] = {}
        for edge in edges:
            victims_by_region[edge.region] = victims_by_region.get(edge.region, 0) + 1
        victims_by_region = dict(sorted(victims_by_region.items()))
        links = [link.to_dict() for link in actor.links]
        shared_openers = actor.shared_openers()
        return Alert(
            alert_id=self.rule.alert_id(actor.actor_id, level, kind),
            kind=kind,
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
            reason=describe(
                kind, len(accounts), victims_by_region, first_seen, last_seen, links, shared_openers
            ),
            links=tuple(links),
            merged_actor_ids=tuple(sorted(actor.merged)),
            shared_openers=tuple(shared_openers),
        )

    def _expire(self, cutoff: float) -> None:
        """Remove every edge older than `cutoff`, except those of pinned actors."""
        expiry, pinned = self._expiry, []
        while expiry and expiry[0][0] < cutoff:
            entry = heapq.heappop(expiry)
            _, actor_id, victim = entry
            actor = self._actors.get(actor_id)
            edge = actor.edges.get(victim) if actor is not None else None
            if actor is None or edge is None:
                continue  # expired already, or merged away and now under another id
            if actor_id in self.pinned:
                pinned.append(entry)
            elif edge.last_seen >= cutoff:
                heapq.heappush(expiry, (edge.last_seen, actor_id, victim))
            else:
                self._remove_edge(actor, victim)
        for entry in pinned:
            heapq.heappush(expiry, entry)

    def _expire_actor(self, actor_id: str, cutoff: float) -> None:
        """One actor's expiry, judged by its own record's watermark."""
        actor = self._actors.get(actor_id)
        if actor is None:
            return
        for victim in [v for v, edge in actor.edges.items() if edge.last_seen < cutoff]:
            self._remove_edge(actor, victim)

    def _remove_edge(self, actor: Actor, victim: str) -> None:
        del actor.edges[victim]
        self.live_edges -= 1
        if not actor.edges:
            del self._actors[actor.actor_id]
