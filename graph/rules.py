"""The cross-region rule and the alert it raises: the alert contract lives here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Alert", "CrossRegionRule", "describe", "format_time"]


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC, the form every time in an alert takes."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Alert:
    """One actor reaching a new level: victims in `level` distinct regions inside the window."""

    alert_id: str
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

    def to_dict(self) -> dict[str, Any]:
        """The alert contract, as published on the alerts topic."""
        return {
            "alert_id": self.alert_id,
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
        }


@dataclass(frozen=True, slots=True)
class CrossRegionRule:
    """Alert when an actor's live victims are in at least `min_regions` distinct regions.

    Each victim counts in one region, the latest one reported for them, so a single victim
    who moves between counties cannot make a local harasser look like a cross-region one;
    and `level` regions always means at least `level` distinct victims.
    """

    min_regions: int = 3

    def __post_init__(self) -> None:
        if self.min_regions < 2:
            raise ValueError("min_regions must be at least 2")

    def level(self, region_count: int) -> int:
        """The alert level an actor with victims in `region_count` regions has (0: none)."""
        return region_count if region_count >= self.min_regions else 0

    @staticmethod
    def alert_id(actor_id: str, level: int) -> str:
        """Deterministic: redelivery and restarts reproduce the same id, never a new one."""
        return f"{actor_id}-L{level}"


def describe(
    account_count: int, victims_by_region: Mapping[str, int], first_seen: float, last_seen: float
) -> str:
    """The one-sentence reason a responder reads first."""
    regions = sorted(victims_by_region)
    victims = sum(victims_by_region.values())
    who = "One account" if account_count == 1 else f"One actor using {account_count} accounts"
    return (
        f"{who} targeted {victims} victims in {len(regions)} regions "
        f"({', '.join(regions)}) between {format_time(first_seen)[:10]} "
        f"and {format_time(last_seen)[:10]}."
    )
