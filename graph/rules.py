# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The cross-region rule and the alert it raises: the alert contract lives here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Alert", "CrossRegionRule", "describe", "format_time"]


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC, the form every time in an alert takes."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Alert:
    """An actor reaching a new serial level, or found to be the target of a brigade.

    `kind` is "serial" (victims in `level` regions, one victim per episode counted) or
    "brigade" (one burst of reports from `victim_count` victims; `level` is its regions).
    """

    alert_id: str
    kind: str
    actor_id: str
    level: int
    regions: tuple[str, ...]
    victim_count: int
    victims_by_region: Mapping[str, int]
    accounts: tuple[str, ...]
    platforms: tuple[str, ...]
    categories: tuple[str, ...]
    report_ids: tuple[str, ...]
    first_seen: float
    last_seen: float
    raised_at: float
    reason: str
    links: tuple[Mapping[str, Any], ...] = ()
    merged_actor_ids: tuple[str, ...] = ()
    shared_openers: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The alert contract, as published on the alerts topic."""
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "actor_id": self.actor_id,
            "level": self.level,
            "regions": list(self.regions),
            "victim_count": self.victim_count,
            "victims_by_region": dict(self.victims_by_region),
            "accounts": list(self.accounts),
            "platforms": list(self.platforms),
            "categories": list(self.categories),
            "report_ids": list(self.report_ids),
            "first_seen": format_time(self.first_seen),
            "last_seen": format_time(self.last_seen),
            "raised_at": format_time(self.raised_at),
            "reason": self.reason,
            "links": [dict(link) for link in self.links],
            "merged_actor_ids": list(self.merged_actor_ids),
            "shared_openers": [dict(opener) for opener in self.shared_openers],
        }


@dataclass(frozen=True, slots=True)
class CrossRegionRule:
    """When an actor's victims make it a serial cross-region actor, or a brigade target.

    Each victim counts in one region, the latest reported for them, so one victim who
    moves county cannot make a local harasser look cross-regional.

    Victims whose first reports follow each other within `episode_hours` form one episode
    (a burst: a mass-report brigade, or one campaign on one day). The serial level is the
    number of distinct regions the actor reaches with at most one victim per episode, so a
    serial actor who moves on victim after victim reaches level N in N episodes, while a
    brigade of hundreds of reports from every region within hours stays at level 1. Level N
    always means at least N distinct victims.

    An episode of at least `brigade_victims` victims is reported once as a brigade.
    """

    min_regions: int = 3
    episode_hours: float = 12.0
    brigade_victims: int = 10

    def __post_init__(self) -> None:
        if self.min_regions < 2:
            raise ValueError("min_regions must be at least 2")
        if self.episode_hours < 0:
            raise ValueError("episode_hours must not be negative")

    def episodes(self, victims: Sequence[tuple[float, str]]) -> list[list[tuple[float, str]]]:
        """Group (first_seen, region) pairs into episodes, in time order."""
        gap = self.episode_hours * 3600.0
        grouped: list[list[tuple[float, str]]] = []
        previous = None
        for victim in sorted(victims):
            if previous is None or victim[0] - previous >= gap:
                grouped.append([])
            grouped[-1].append(victim)
            previous = victim[0]
        return grouped

    def level(self, victims: Sequence[tuple[float, str]]) -> int:
        """The serial level of an actor with these victims (0: below `min_regions`)."""
        if len({region for _, region in victims}) < self.min_regions:
            return 0  # cheap bound: the level can never exceed the distinct regions
        regions_per_episode = [
            {region for _, region in episode} for episode in self.episodes(victims)
        ]
        level = _max_matching(regions_per_episode)
        return level if level >= self.min_regions else 0

    def largest_episode(self, victims: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
        return max(self.episodes(victims), key=len, default=[])

    @staticmethod
    def alert_id(actor_id: str, level: int, kind: str = "serial") -> str:
        """Deterministic: redelivery and restarts reproduce the same id, never a new one."""
        return f"{actor_id}-L{level}" if kind == "serial" else f"{actor_id}-{kind}"


def _max_matching(options: list[set[str]]) -> int:
    """Maximum matching of episodes to distinct regions (Kuhn's augmenting paths)."""
    owner: dict[str, int] = {}
    return sum(_place(options, owner, episode, set()) for episode in range(len(options)))


def _place(options: list[set[str]], owner: dict[str, int], episode: int, seen: set[str]) -> bool:
    """An augmenting path for `episode`. A function of its own, not a closure: a recursive
    closure is a reference cycle, left to the cycle collector, and the worker's `freeze`
    (streams/memory.py) left every such cycle pending then in memory for good."""
    for region in options[episode]:
        if region in seen:
            continue
        seen.add(region)
        if region not in owner or _place(options, owner, owner[region], seen):
            owner[region] = episode
            return True
    return False


def describe(
    kind: str,
    accounts: int,
    victims_by_region: Mapping[str, int],
    first_seen: float,
    last_seen: float,
    links: Sequence[Mapping[str, Any]] = (),
    shared_openers: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The sentence a responder reads first."""
    regions = sorted(victims_by_region)
    victims = sum(victims_by_region.values())
    who = "One account" if accounts == 1 else f"One actor using {accounts} accounts"
    between = f"between {format_time(first_seen)[:10]} and {format_time(last_seen)[:10]}"
    if kind == "brigade":
        hours = max(1, round((last_seen - first_seen) / 3600))
        sentence = (
            f"{who} was reported by {victims} people in {len(regions)} regions within "
            f"{hours} hours ({between}): a burst like this is usually a mass-report brigade "
            f"or a single campaign, not serial harassment."
        )
    else:
        sentence = (
            f"{who} targeted victims in {len(regions)} regions ({', '.join(regions)}), "
            f"one after another, {between}."
        )
    signals = sorted({str(link["signal"]) for link in links})
    if signals:
        sentence += f" Accounts linked by shared {', '.join(signals)}."
    for opener in shared_openers[:1]:
        sentence += f' {opener["accounts"]} accounts used the same opener: "{opener["opener"]}".'
    return sentence
