"""Alias linking: offender accounts that share a strong signal are one actor.

The resolver is a union-find over offender accounts (`platform:account`). A report whose
offender carries a strong signal value (email_hash, phone_hash, device_id; optionally the
opening line of its text) is linked to the first account seen with that value. Linking is
transitive and incremental: one report can merge two actors. `ip` is weak and never links.
A value seen on more than `max_accounts_per_signal` accounts is a hub (carrier NAT, a shared
device, the hash of an empty string) and links nothing more.

Deterministic for a given order of reports, so a worker rebuilds it by replaying its input.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass, field
from typing import Any

from graph.contract import Report
from graph.identity import actor_id_for

__all__ = [
    "DEGENERATE_VALUES",
    "STRONG_SIGNALS",
    "AliasResolver",
    "Hub",
    "Link",
    "Merge",
    "Resolution",
    "opener_of",
]

STRONG_SIGNALS = ("email_hash", "phone_hash", "device_id")
OPENER = "text_opener"


def _degenerate_values() -> frozenset[str]:
    """Values that stand for "nothing": a platform that hashes an empty field produces the
    same hash for every such account. The hub guard would stop them only after gluing
    `max_accounts_per_signal` strangers together, so they are hubs from the first sight."""
    blanks = ("", "0", "null", "none", "unknown", "n/a", "undefined", "-")
    values = set(blanks)
    for blank in blanks:
        for algorithm in ("md5", "sha1", "sha256"):
            values.add(hashlib.new(algorithm, blank.encode()).hexdigest())
    return frozenset(values)


DEGENERATE_VALUES = _degenerate_values()

_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")
_NOT_WORD = re.compile(r"[^\w\s']+")


def opener_of(text: str | None) -> str | None:
    """The first sentence of a message, normalised, when long enough to mean something."""
    if not text:
        return None
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    words = _NOT_WORD.sub(" ", first.lower()).split()
    if len(words) < 3:
        return None
    return " ".join(words)[:120]


@dataclass(frozen=True, slots=True)
class Link:
    """Why two accounts are one actor: they shared a value of this signal."""

    accounts: tuple[str, str]
    signal: str

    def to_dict(self) -> dict[str, Any]:
        return {"accounts": list(self.accounts), "signal": self.signal}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Link:
        first, second = document["accounts"]
        return cls((str(first), str(second)), str(document["signal"]))


@dataclass(frozen=True, slots=True)
class Merge:
    """Actor `absorbed` is now part of actor `into` (the older of the two keeps its id)."""

    absorbed: str
    into: str


@dataclass(frozen=True, slots=True)
class Hub:
    """A signal value that reached more accounts than one person plausibly has."""

    signal: str
    fingerprint: str
    accounts: int


@dataclass(slots=True)  # one per report: not frozen, whose __init__ costs 3x (see Report)
class Resolution:
    actor_id: str
    links: tuple[Link, ...] = ()
    merges: tuple[Merge, ...] = ()
    hubs: tuple[Hub, ...] = ()
    # The newest event time in the stream so far: the one watermark every partition uses.
    watermark: float = 0.0


@dataclass(slots=True)
class _Value:
    accounts: dict[str, None] = field(default_factory=dict)  # insertion-ordered set


class AliasResolver:
    def __init__(
        self, secret: bytes, max_accounts_per_signal: int = 20, link_by_text: bool = False
    ) -> None:
        if max_accounts_per_signal < 2:
            raise ValueError("max_accounts_per_signal must be at least 2")
        self.secret = secret
        self.max_accounts_per_signal = max_accounts_per_signal
        self.link_by_text = link_by_text
        self._parent: dict[str, str] = {}
        self._founder: dict[str, tuple[int, str]] = {}  # root -> (order, founding account)
        self._actor_ids: dict[str, str] = {}  # root -> its actor id (a keyed hash: cached)
        self._values: dict[str, _Value] = {}
        self._hubs: set[str] = set()
        self._order = 0
        self.watermark = -math.inf

    @property
    def accounts(self) -> int:
        return len(self._parent)

    @property
    def hubs(self) -> int:
        return len(self._hubs)

    def actor_of(self, account: str) -> str:
        return self._actor_ids[self._find(account)]

    def resolve(self, report: Report, watermark: float | None = None) -> Resolution:
        """Link one report's account. `watermark` is the stream's (graph/watermark.py);
        without one, the newest event time resolved so far stands in for it."""
        self.watermark = max(self.watermark, report.event_time if watermark is None else watermark)
        account = report.offender_key
        new = account not in self._parent
        if new:
            self._parent[account] = account
            self._founder[account] = (self._order, account)
            self._actor_ids[account] = actor_id_for(account, self.secret)
            self._order += 1
        new_actor = self._actor_ids[account] if new else None
        links: list[Link] = []
        merges: list[Merge] = []
        hubs: list[Hub] = []
        for signal, value in self._strong_signals(report):
            key = f"{signal}\x00{value}"
            if key in self._hubs:
                continue
            if value.strip().lower() in DEGENERATE_VALUES:
                self._hubs.add(key)
                hubs.append(Hub(signal, self._fingerprint(key), 1))
                continue
            known = self._values.get(key)
            if known is None:
                known = self._values[key] = _Value()
            if account in known.accounts:
                continue
            known.accounts[account] = None
            if len(known.accounts) > self.max_accounts_per_signal:
                self._hubs.add(key)
                del self._values[key]
                hubs.append(Hub(signal, self._fingerprint(key), len(known.accounts)))
                continue
            first = next(iter(known.accounts))
            merge = self._union(first, account)
            if merge is not None:
                links.append(Link((first, account), signal))
                # An account first seen in this very report has no state anywhere to move.
                if merge.absorbed != new_actor:
                    merges.append(merge)
        return Resolution(
            self.actor_of(account), tuple(links), tuple(merges), tuple(hubs), self.watermark
        )

    def _strong_signals(self, report: Report) -> list[tuple[str, str]]:
        signals = [
            (name, report.offender_signals[name])
            for name in STRONG_SIGNALS
            if name in report.offender_signals
        ]
        if self.link_by_text:
            opener = opener_of(report.text)
            if opener is not None:
                signals.append((OPENER, opener))
        return signals

    def _find(self, account: str) -> str:
        parent = self._parent
        root = account
        while parent[root] != root:
            root = parent[root]
        while parent[account] != root:  # path compression
            parent[account], account = root, parent[account]
        return root

    def _union(self, first: str, second: str) -> Merge | None:
        a, b = self._find(first), self._find(second)
        if a == b:
            return None
        older, newer = (a, b) if self._founder[a] < self._founder[b] else (b, a)
        self._parent[newer] = older
        del self._founder[newer]
        return Merge(absorbed=self._actor_ids.pop(newer), into=self._actor_ids[older])

    def _fingerprint(self, key: str) -> str:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()[:16]
