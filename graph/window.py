# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The rolling actor-victim graph of one partition: event-time window, expiry, merges, the rule.

Memory and time per report are what bound linkwatch (the performance issue), so the layout
is compact. An edge of one report, as most are, is packed into bytes (`_pack`): its time,
its region and category as numbers (`_NAMES`), then its victim (a pseudonym as the bytes
its digits spell: `_victim_code`), the account that made it if that is not its actor's
`account`, and its report id. An actor whose edges are all packed, as most are, holds up
to 16 of them in one `bytes` object with its account, and the graph stores such an actor
as those bytes alone (`Actor` explains). A second report makes an edge an `Edge`: a
slotted object whose multi-valued fields (regions, categories, report
ids, accounts) hold a single string until a second value arrives, then a tuple, and a set
only past a handful; its victim and first report id share one string. Readers see every
edge as an `Edge` (`Actor.edges()`). Expiry files each actor's id, not each edge, under a
slice of event time (a list slot an actor, where a heap entry cost a tuple and a float: 80
bytes).
"""

from __future__ import annotations

import bisect
import math
import struct
import sys
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from graph.aliases import Link, opener_of
from graph.compact import file_due, passed_buckets, right_sized
from graph.contract import Report
from graph.forwards import Forwards
from graph.raised import RaisedAlerts
from graph.rules import Alert, CrossRegionRule, describe

__all__ = ["Actor", "Applied", "Edge", "Outcome", "RollingGraph"]

# Actors whose old edges each record applied expires (besides its own actor): twice the
# rate at which actors are created, so expiry keeps up with a watermark that moves on
# steadily, and a jump is spread over the records that follow (`RollingGraph.expire_some`).
EXPIRE_PER_RECORD = 2
# Expiry checks an actor once the window's cutoff has passed the whole slice of event time
# it is filed under: 1/256 of a window, so memory comes back at most that much later.
EXPIRY_BUCKETS = 256

# A multi-valued field: one value, a small tuple, or (past _SET_AFTER values) a set.
Values = str | tuple[str, ...] | set[str]
_SET_AFTER = 8
# An actor's edges: a tuple, searched in order, up to this many victims (most actors have
# one to three: a tuple of three is 64 bytes, a dict 184-272), then a dict by victim.
_TUPLE_EDGES = 8
# Or, when every edge is packed, one `bytes` object for up to this many (see `Actor`).
_BLOB_EDGES = 16


def _add(values: Values | None, value: str) -> Values:
    if values is None:
        return sys.intern(value) if len(value) <= 64 else value
    if isinstance(values, str):
        return values if values == value else (values, value)
    if isinstance(values, tuple):
        if value in values:
            return values
        return (*values, value) if len(values) < _SET_AFTER else {*values, value}
    values.add(value)
    return values


def _items(values: Values) -> Iterable[str]:
    return (values,) if isinstance(values, str) else values


def _has(values: Values, value: str) -> bool:
    return values == value if isinstance(values, str) else value in values


def _union(values: Values, others: Iterable[str]) -> Values:
    for value in others:
        values = _add(values, value)
    return values


class Outcome(StrEnum):
    """What applying one valid report did to the graph."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"


class Edge:
    """Everything one actor did to one victim inside the window.

    `region` is the victim's region in their latest report (so its time is `last_seen`);
    `regions` are all regions reported for them.

    The victim and the first report id are held in one string, `_victim_report`, the victim
    its first `_victim_end` characters: every string costs 49 bytes before its first
    character, each edge has a victim, and nearly every edge has one report, so this saves
    a string an edge (48-64 bytes with the allocator's rounding). Report ids after the first
    are in `_more_report_ids`.
    """

    __slots__ = ("_accounts", "_categories", "_more_report_ids", "_regions", "_victim_end",
                 "_victim_report", "first_seen", "last_seen", "region")  # fmt: skip

    def __init__(
        self, victim: str, region: str, moment: float, report_id: str, category: str, account: str
    ) -> None:
        self._victim_report = victim + report_id
        self._victim_end = len(victim)
        self._more_report_ids: Values | None = None
        self.region: str = _add(None, region)  # type: ignore[assignment]  # a str, interned
        self.first_seen = moment
        self.last_seen = moment
        self._regions: Values = self.region
        self._categories: Values = _add(None, category)
        self._accounts: Values = account  # not interned: accounts are many and unique

    @property
    def victim(self) -> str:
        return self._victim_report[: self._victim_end]

    def is_victim(self, victim: str) -> bool:
        """`self.victim == victim`, without making the victim's string."""
        return len(victim) == self._victim_end and self._victim_report.startswith(victim)

    def report_id_values(self) -> Iterable[str]:
        """The report ids, the first one first."""
        first = self._victim_report[self._victim_end :]
        more = self._more_report_ids
        return (first,) if more is None else (first, *_items(more))

    @property
    def regions(self) -> frozenset[str]:
        return frozenset(_items(self._regions))

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(_items(self._categories))

    @property
    def report_ids(self) -> frozenset[str]:
        return frozenset(self.report_id_values())

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(_items(self._accounts))

    def has_report(self, report_id: str) -> bool:
        held, more = self._victim_report, self._more_report_ids
        if len(held) - self._victim_end == len(report_id) and held.endswith(report_id):
            return True
        return more is not None and _has(more, report_id)

    def _add_report_id(self, report_id: str) -> None:
        if not self.has_report(report_id):
            more = self._more_report_ids
            self._more_report_ids = report_id if more is None else _add(more, report_id)

    def add_report(self, moment: float, region: str, report_id: str, category: str,
                   account: str) -> bool:  # fmt: skip
        """Fold in one more report; True when what the rule looks at changed: the victim's
        current region, or their first report's time (which decides their episode)."""
        changed = moment < self.first_seen
        if changed:
            self.first_seen = moment
        if moment >= self.last_seen:
            if region != self.region:
                self.region = _add(None, region)  # type: ignore[assignment]
                changed = True
            self.last_seen = moment
        self._regions = _add(self._regions, region)
        self._categories = _add(self._categories, category)
        self._add_report_id(report_id)
        self._accounts = _add(self._accounts, account)
        return changed

    def merge(self, other: Edge) -> None:
        """Fold another record of the same actor-victim pair in (idempotent)."""
        if other.last_seen > self.last_seen:
            self.region, self.last_seen = other.region, other.last_seen
        self.first_seen = min(self.first_seen, other.first_seen)
        self._regions = _union(self._regions, _items(other._regions))
        self._categories = _union(self._categories, _items(other._categories))
        for report_id in other.report_id_values():
            self._add_report_id(report_id)
        self._accounts = _union(self._accounts, _items(other._accounts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "victim": self.victim,
            "region": self.region,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "regions": sorted(_items(self._regions)),
            "categories": sorted(_items(self._categories)),
            "report_ids": sorted(self.report_id_values()),
            "accounts": sorted(_items(self._accounts)),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Edge:
        edge = cls(document["victim"], document["region"], float(document["first_seen"]),
                   document["report_ids"][0], document["categories"][0],
                   document["accounts"][0])  # fmt: skip
        edge.last_seen = float(document["last_seen"])
        edge._regions = _union(edge.region, document["regions"])
        edge._categories = _union(edge._categories, document["categories"])
        for report_id in document["report_ids"]:
            edge._add_report_id(report_id)
        edge._accounts = _union(edge._accounts, document["accounts"])
        return edge


class _Names:
    """Region, category and victim platform names by number, for packed edges: a few dozen
    in practice, and never more than 65,536 (past that, new names go in `Edge` objects,
    and victims as their text, instead)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self.limit = 0x10000

    def id_of(self, name: str) -> int:
        """The name's number, or -1 when the table is full."""
        found = self.ids.get(name)
        if found is not None:
            return found
        if len(self.names) >= self.limit:
            return -1
        name = sys.intern(name)
        self.ids[name] = len(self.names)
        self.names.append(name)
        return len(self.names) - 1


_NAMES: Final = _Names()

# A packed edge (one report): its time (first and last seen), region and category numbers,
# the victim's length as packed, then the victim (`_victim_code`) and the report id in
# UTF-8. 79 bytes for the worker's identifiers (a 96-byte block; 94 with the victim in
# UTF-8, a 112-byte one), where an `Edge` and its string took 256.
_HEAD: Final = struct.Struct("<dHHH")
_HEAD_SIZE: Final = 14
_TIME: Final = struct.Struct("<d")
_LENGTH: Final = struct.Struct("<H")


def _victim_code(victim: str) -> bytes:
    """A victim as packed edges hold it. A victim key ends in intake's pseudonym, `v_` and
    20 lowercase hex digits (`platform:v_...`, graph/identity.py): held as the byte 0xFF,
    the 10 bytes the digits spell and the platform's number in `_NAMES`, 13 bytes where
    its text took 28. Any other victim (or any, once the name table is full) is held in
    UTF-8, which never has the byte 0xFF."""
    if len(victim) >= 23 and victim[-23:-20] == ":v_":
        digits = victim[-20:]
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
        platform = _NAMES.id_of(victim[:-23]) if len(raw) == 10 else -1
        if platform >= 0 and raw.hex() == digits:  # not upper case, not spaced
            return b"".join((b"\xff", raw, _LENGTH.pack(platform)))
    return victim.encode()


def _victim_text(code: bytes) -> str:
    """The victim that `_victim_code` gave `code` for."""
    if code[:1] == b"\xff":
        return f"{_NAMES.names[code[11] | code[12] << 8]}:v_{code[1:11].hex()}"
    return code.decode()


# The victim length's top bit: the edge names its own account (one that is not its
# actor's: an absorbed actor's edge, another account's report), as the account's length
# and UTF-8 after the victim.
_OWN_ACCOUNT: Final = 0x8000


def _pack(encoded: bytes, region: str, moment: float, report_id: str, category: str,
          account: str | None = None) -> bytes | None:  # fmt: skip
    """One report's edge packed (its victim `encoded` by `_victim_code`), with its
    `account` if that is not its actor's, or None when it does not fit: a name table
    full, or more than the 65,535 bytes an actor's `bytes` can give an edge (validation
    allows at most a few thousand)."""
    region_id, category_id = _NAMES.id_of(region), _NAMES.id_of(category)
    report = report_id.encode()
    own = b"" if account is None else account.encode()
    size = _HEAD_SIZE + len(encoded) + len(report) + (0 if account is None else 2 + len(own))
    if region_id < 0 or category_id < 0 or size > 0xFFFF or len(encoded) >= _OWN_ACCOUNT:
        return None
    if account is None:
        head = _HEAD.pack(moment, region_id, category_id, len(encoded))
        return b"".join((head, encoded, report))
    head = _HEAD.pack(moment, region_id, category_id, len(encoded) | _OWN_ACCOUNT)
    return b"".join((head, encoded, _LENGTH.pack(len(own)), own, report))


def _victim_length(packed: bytes, at: int = 0) -> int:
    return packed[at + 12] | (packed[at + 13] & 0x7F) << 8


def _names_account(packed: bytes) -> bool:
    return packed[13] & 0x80 != 0


def _report_start(packed: bytes) -> int:
    """Where a packed edge's report id starts: after its victim, and its account if any."""
    at = _HEAD_SIZE + _victim_length(packed)
    if _names_account(packed):
        at += 2 + (packed[at] | packed[at + 1] << 8)
    return at


def _own_account(packed: bytes) -> str | None:
    """The account a packed edge names (`_OWN_ACCOUNT`), or None: its actor's."""
    if not _names_account(packed):
        return None
    return packed[_HEAD_SIZE + _victim_length(packed) + 2 : _report_start(packed)].decode()


def _time_at(packed: bytes, at: int) -> float:
    moment: float = _TIME.unpack_from(packed, at)[0]
    return moment


def _region_at(packed: bytes, at: int) -> str:
    return _NAMES.names[packed[at + 8] | packed[at + 9] << 8]


def _unpack(packed: bytes, account: str) -> Edge:
    """A packed edge as an `Edge`; `account` is its actor's."""
    moment, region_id, category_id, _ = _HEAD.unpack_from(packed)
    victim = _victim_text(packed[_HEAD_SIZE : _HEAD_SIZE + _victim_length(packed)])
    own, names = _own_account(packed), _NAMES.names
    return Edge(victim, names[region_id], moment, packed[_report_start(packed) :].decode(),
                names[category_id], account if own is None else own)  # fmt: skip


# What an actor holds for each edge: packed, or an `Edge`.
_Item = bytes | Edge

# An actor's edges in one `bytes` object (see `Actor`): the actor's `expires_at` (as of when
# the graph last stored it as these bytes alone), how many edges, the length of the account
# in UTF-8 bytes, the account; then each edge, packed, after its length.
_BLOB_HEAD: Final = struct.Struct("<dBH")
_BLOB_HEAD_SIZE: Final = 11


def _blob(account: bytes, items: list[bytes], expires_at: float = math.inf) -> bytes:
    parts = [_BLOB_HEAD.pack(expires_at, len(items), len(account)), account]
    for item in items:
        parts.append(_LENGTH.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def _blob_count(blob: bytes) -> int:
    return blob[8]


def _blob_start(blob: bytes) -> int:
    """Where the first edge's length is."""
    return _BLOB_HEAD_SIZE + (blob[9] | blob[10] << 8)


def _record_end(blob: bytes, at: int) -> int:
    """Where the edge whose length is at `at` in an actor's bytes ends."""
    return at + 2 + (blob[at] | blob[at + 1] << 8)


def _blob_account(blob: bytes) -> bytes:
    return blob[_BLOB_HEAD_SIZE : _blob_start(blob)]


def _blob_items(blob: bytes) -> list[bytes]:
    """The packed edges in an actor's bytes."""
    items = []
    at = _blob_start(blob)
    for _ in range(_blob_count(blob)):
        end = _record_end(blob, at)
        items.append(blob[at + 2 : end])
        at = end
    return items


def _blob_find(blob: bytes, encoded: bytes) -> bytes | None:
    """The packed edge of the victim `encoded` (`_victim_code`) in an actor's bytes:
    compared in place, and copied out if found."""
    at = _blob_start(blob)
    for _ in range(_blob_count(blob)):
        end = _record_end(blob, at)
        if (_victim_length(blob, at + 2) == len(encoded)
                and blob.startswith(encoded, at + 2 + _HEAD_SIZE)):  # fmt: skip
            return blob[at + 2 : end]
        at = end
    return None


def _last_seen(item: _Item) -> float:
    return _time_at(item, 0) if isinstance(item, bytes) else item.last_seen


def _first_seen(item: _Item) -> float:
    return _last_seen(item) if isinstance(item, bytes) else item.first_seen


def _region(item: _Item) -> str:
    return _region_at(item, 0) if isinstance(item, bytes) else item.region


def _victim(item: _Item) -> str:
    if isinstance(item, bytes):
        return _victim_text(item[_HEAD_SIZE : _HEAD_SIZE + _victim_length(item)])
    return item.victim


def _is_victim(item: _Item, victim: str, encoded: bytes) -> bool:
    """`_victim(item) == victim`; `encoded` is `_victim_code(victim)`."""
    if isinstance(item, bytes):
        return _victim_length(item) == len(encoded) and item.startswith(encoded, _HEAD_SIZE)
    return item.is_victim(victim)


def _has_report(item: _Item, report_id: str) -> bool:
    if isinstance(item, bytes):
        encoded = report_id.encode()
        return len(item) - _report_start(item) == len(encoded) and item.endswith(encoded)
    return item.has_report(report_id)


class _Timeline:
    """An actor's victims' first-report times, sorted, with its episode count kept current.

    Actors with enough victims for a brigade keep one; it turns "recount the episodes of
    300 victims" into a bisect per new victim.
    """

    __slots__ = ("episodes", "gap", "regions", "times")

    def __init__(self, victims: Iterable[tuple[float, str]], gap: float) -> None:
        self.gap = gap
        self.times: list[float] = []
        self.regions: dict[str, int] = {}  # victims per current region
        for moment, region in victims:
            self.times.append(moment)
            self.regions[region] = self.regions.get(region, 0) + 1
        self.times.sort()
        self.episodes = 1 + sum(
            1 for a, b in zip(self.times, self.times[1:], strict=False) if b - a >= gap
        ) if self.times else 0  # fmt: skip

    def add(self, moment: float, region: str) -> int:
        """Insert one new victim; returns the index of their time."""
        self.regions[region] = self.regions.get(region, 0) + 1
        times, gap = self.times, self.gap
        index = bisect.bisect_right(times, moment)
        before = times[index - 1] if index else None
        after = times[index] if index < len(times) else None
        if before is None and after is None:
            self.episodes = 1
        elif before is not None and after is not None:
            self.episodes += (
                (moment - before >= gap) + (after - moment >= gap) - (after - before >= gap)
            )
        else:
            self.episodes += abs(moment - (before if before is not None else after)) >= gap  # type: ignore[operator]
        times.insert(index, moment)
        return index

    def episode_size(self, index: int) -> int:
        """How many victims share the episode of the time at `index`."""
        times, gap = self.times, self.gap
        start = end = index
        while start > 0 and times[start] - times[start - 1] < gap:
            start -= 1
        while end + 1 < len(times) and times[end + 1] - times[end] < gap:
            end += 1
        return end - start + 1


class Actor:
    """One actor: live edges, the links that joined its accounts, and openers they used.

    Its edges are held in one of three ways (`_edges`), by what they need:
    - `bytes` (most actors): every edge packed, at most `_BLOB_EDGES` of them, in one
      object with the account of the first (`_blob`); an edge made by another account
      names it (`_OWN_ACCOUNT`). An actor of three one-report edges holds a 272-byte block
      where it held 464 bytes in five;
    - a tuple of edges, packed (`bytes`) or not (`Edge`), in the order they came;
    - past `_TUPLE_EDGES`, a dict of them by victim.
    A new edge that cannot be packed in with the rest moves the actor to the tuple.

    An actor that is only its `bytes` (`bare`: no links, openers, merges or timeline, as
    most are) is stored by the graph as those bytes alone, with its `expires_at` in them,
    and made an `Actor` again while a record is applied to it (`RollingGraph._taken`).
    """

    __slots__ = ("_account", "_edges", "_links", "_merged", "_openers", "actor_id", "expires_at",
                 "timeline")  # fmt: skip

    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        self._edges: bytes | tuple[_Item, ...] | dict[str, _Item] = ()
        # The account of its packed edges when they are not in `_edges` (bytes) with it.
        self._account: str | None = None
        self._links: dict[Link, None] | None = None  # most actors have none
        self._openers: dict[str, set[str]] | None = None
        self._merged: set[str] | None = None
        # At most its edges' earliest last_seen: the time it is filed under for expiry.
        self.expires_at = math.inf
        self.timeline: _Timeline | None = None  # kept for large actors (see `_check`)

    @classmethod
    def from_bytes(cls, actor_id: str, blob: bytes) -> Actor:
        """The actor a graph stored as its bytes alone (`bare`)."""
        actor = cls(actor_id)
        actor._edges = blob
        actor.expires_at = _time_at(blob, 0)
        return actor

    def bare(self) -> bytes | None:
        """The actor as its bytes alone, with its `expires_at`, if that is all it is."""
        edges = self._edges
        if not isinstance(edges, bytes) or not (
            self._links is None and self._openers is None and self._merged is None
            and self.timeline is None
        ):  # fmt: skip
            return None
        if _time_at(edges, 0) == self.expires_at:
            return edges
        return b"".join((_TIME.pack(self.expires_at), edges[8:]))

    @property
    def account(self) -> str | None:
        """The account that made its packed edges: set by the first, which most edges
        share."""
        edges = self._edges
        return _blob_account(edges).decode() if isinstance(edges, bytes) else self._account

    @property
    def edge_count(self) -> int:
        edges = self._edges
        return _blob_count(edges) if isinstance(edges, bytes) else len(edges)

    def items(self) -> Iterable[_Item]:
        """The live edges as held, packed or not, in the order their victims were added
        (not to be changed while iterating)."""
        edges = self._edges
        if isinstance(edges, bytes):
            return _blob_items(edges)
        return edges if isinstance(edges, tuple) else edges.values()

    def edges(self) -> list[Edge]:
        """The live edges, in the order their victims were added. A packed edge is given as
        a copy: to change an edge, get it from `edge`."""
        account = self.account or ""
        return [
            _unpack(item, account) if isinstance(item, bytes) else item for item in self.items()
        ]

    def victims(self) -> list[tuple[float, str]]:
        """Each victim's first report time and current region (what the rule judges)."""
        edges = self._edges
        if not isinstance(edges, bytes):
            return [(_first_seen(item), _region(item)) for item in self.items()]
        victims = []  # read in place: the rule asks for them at each new victim
        at = _blob_start(edges)
        for _ in range(_blob_count(edges)):
            victims.append((_time_at(edges, at + 2), _region_at(edges, at + 2)))
            at = _record_end(edges, at)
        return victims

    def find(self, victim: str, encoded: bytes | None = None) -> _Item | None:
        """The victim's edge as held, packed or not; `encoded` is `_victim_code(victim)`
        when the caller has it."""
        edges = self._edges
        if isinstance(edges, dict):
            return edges.get(victim)
        if encoded is None:
            encoded = _victim_code(victim)
        if isinstance(edges, bytes):
            return _blob_find(edges, encoded)
        for item in edges:
            if _is_victim(item, victim, encoded):
                return item
        return None

    def edge(self, victim: str) -> Edge | None:
        """The victim's edge, unpacked (for good) if it was packed, to be changed."""
        item = self.find(victim)
        return None if item is None else self.unpacked(item)

    def _spread(self) -> tuple[_Item, ...] | dict[str, _Item]:
        """Out of one `bytes` object, into a tuple."""
        edges = self._edges
        if isinstance(edges, bytes):
            self._account = _blob_account(edges).decode()
            edges = self._edges = tuple(_blob_items(edges))
        return edges

    def unpacked(self, item: _Item) -> Edge:
        """`item` (one of this actor's) as an `Edge` held in its place."""
        if not isinstance(item, bytes):
            return item
        edges = self._spread()
        edge = _unpack(item, self._account or "")
        if isinstance(edges, tuple):  # a packed edge is its bytes: equal, not the same
            self._edges = tuple(edge if held == item else held for held in edges)
        else:
            edges[edge.victim] = edge  # keeps its place in the order
        return edge

    def new_edge(self, victim: str, region: str, moment: float, report_id: str,
                 category: str, account: str, encoded: bytes | None = None) -> _Item:  # fmt: skip
        """A new victim's edge, packed: with its account when that is not the actor's (the
        first packed edge's)."""
        held = self.account
        if encoded is None:
            encoded = _victim_code(victim)
        if held is None or held == account:
            packed = _pack(encoded, region, moment, report_id, category)
            if packed is not None and held is None:
                self._account = account
        else:
            packed = _pack(encoded, region, moment, report_id, category, account)
        if packed is not None:
            return packed
        return Edge(victim, region, moment, report_id, category, account)

    def compact(self, edge: Edge) -> _Item:
        """`edge` packed, if it holds one report (an absorbed actor's edge), else itself."""
        accounts = edge._accounts
        if (isinstance(accounts, str) and edge._more_report_ids is None
                and edge.first_seen == edge.last_seen and edge._regions is edge.region
                and isinstance(edge._categories, str)):  # fmt: skip
            report_ids = tuple(edge.report_id_values())
            return self.new_edge(edge.victim, edge.region, edge.first_seen, report_ids[0],
                                 edge._categories, accounts)  # fmt: skip
        return edge

    def add_edge(self, item: _Item) -> None:
        """A new victim's edge (`find` of its victim is None), from `new_edge` or
        `compact`."""
        edges = self._edges
        if isinstance(item, bytes):  # packed by `new_edge`
            if not edges and not _names_account(item):  # the first, the actor's account's
                self._edges = _blob((self._account or "").encode(), [item], self.expires_at)
                self._account = None
                return
            if isinstance(edges, bytes):
                count = _blob_count(edges)
                if count < _BLOB_EDGES:
                    self._edges = b"".join((_TIME.pack(self.expires_at), bytes((count + 1,)),
                                            edges[9:], _LENGTH.pack(len(item)), item))  # fmt: skip
                    return
        edges = self._spread()
        if isinstance(edges, tuple):
            if len(edges) < _TUPLE_EDGES:
                self._edges = (*edges, item)
                return
            edges = self._edges = {_victim(held): held for held in edges}
        edges[_victim(item)] = item

    def remove_edges(self, gone: list[_Item]) -> None:
        """Remove some of the actor's edges, as held (and go back to a tuple when few are
        left)."""
        edges = self._edges
        if isinstance(edges, bytes):
            account = _blob_account(edges)
            kept = [item for item in _blob_items(edges) if item not in gone]
            self._edges = _blob(account, kept) if kept else ()
        elif isinstance(edges, dict):
            for item in gone:
                del edges[_victim(item)]
            if len(edges) <= _TUPLE_EDGES // 2:
                self._edges = tuple(edges.values())
        else:
            self._edges = tuple(item for item in edges if item not in gone)
        if not self._edges:
            self._account = None

    def holds_account(self, item: _Item, account: str) -> bool:
        """Whether `account` made the edge `item` (one of this actor's)."""
        if isinstance(item, bytes):
            return self._made_by(item) == account
        return _has(item._accounts, account)

    def _made_by(self, packed: bytes) -> str:
        """The account that made a packed edge of this actor's: its own, or the actor's."""
        own = _own_account(packed)
        return (self.account or "") if own is None else own

    @property
    def links(self) -> list[Link]:
        return list(self._links or ())

    @property
    def merged(self) -> frozenset[str]:
        return frozenset(self._merged or ())

    def add_link(self, link: Link) -> None:
        if self._links is None:
            self._links = {}
        self._links[link] = None

    def add_opener(self, opener: str, accounts: Iterable[str]) -> None:
        if self._openers is None:
            self._openers = {}
        self._openers.setdefault(opener, set()).update(accounts)

    def forget_account(self, account: str) -> None:
        """Erasure: the links and openers that name this account go."""
        if self._links is not None:
            self._links = {link: None for link in self._links if account not in link.accounts}
        for opener, accounts in list((self._openers or {}).items()):
            accounts.discard(account)
            if not accounts and self._openers is not None:
                del self._openers[opener]
        edges = self._edges
        if isinstance(edges, bytes) and _blob_account(edges) == account.encode():
            self._spread()  # the edges left name their own accounts
        if self._account == account:
            self._account = None  # its packed edges that name no account are gone

    def add_merged(self, actor_ids: Iterable[str]) -> None:
        if self._merged is None:
            self._merged = set()
        self._merged.update(actor_ids)

    def accounts(self) -> set[str]:
        found: set[str] = set()
        for item in self.items():
            if isinstance(item, bytes):
                found.add(self._made_by(item))
            else:
                found.update(_items(item._accounts))
        return found

    def regions(self) -> set[str]:
        return {_region(item) for item in self.items()}

    def shared_openers(self) -> list[dict[str, Any]]:
        shared = [
            {"opener": opener, "accounts": len(accounts)}
            for opener, accounts in (self._openers or {}).items()
            if len(accounts) > 1
        ]
        return sorted(shared, key=lambda item: (-item["accounts"], item["opener"]))

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to move this actor into another (an `absorb` record)."""
        return {
            "actor_id": self.actor_id,
            "edges": [edge.to_dict() for edge in self.edges()],
            "links": [link.to_dict() for link in self.links],
            "openers": {
                opener: sorted(accounts) for opener, accounts in (self._openers or {}).items()
            },
            "merged": sorted(self.merged),
        }


def _expires_at(held: Actor | bytes) -> float:
    """The `expires_at` of an actor as the graph stores it."""
    return _time_at(held, 0) if isinstance(held, bytes) else held.expires_at


@dataclass(slots=True, init=False)  # one per report: not frozen, `__init__` written (see Report)
class Applied:
    outcome: Outcome
    alerts: tuple[Alert, ...]

    def __init__(self, outcome: Outcome, alerts: tuple[Alert, ...] = ()) -> None:
        self.outcome = outcome
        self.alerts = alerts


class RollingGraph:
    """The state one worker keeps for one partition of actor-keyed records.

    Time is event time only. Each operation carries a watermark, the newest `reported_at`
    seen (by the resolver, over the whole stream; standalone, by this graph), and an actor
    is judged with the edges whose last report is at most `window_seconds` older than it.
    Expired edges are also removed eagerly, to return memory, except for `pinned` actors,
    whose older records are still to come. Everything here is deterministic for a given
    order of records, which is what lets a worker rebuild it by replaying its partition.
    """

    def __init__(
        self,
        window_seconds: float,
        rule: CrossRegionRule,
        reveal: Callable[[str], str] = str,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.rule = rule
        # Offender accounts are sealed tokens in the graph (graph/identity.py); an alert,
        # which responders act on, carries them opened.
        self.reveal = reveal
        self.watermark = -math.inf
        self.live_edges = 0
        # Actors by id: most as their bytes alone (`Actor.bare`), the rest as objects.
        self._actors: dict[str, Actor | bytes] = {}
        # The alerts each actor raised (highest serial level, brigade or not); kept after
        # an actor expires or merges, so that an alert id is never raised twice.
        self._raised = RaisedAlerts()
        # Actors merged away on this partition, and the actor each now lives in.
        self._forward = Forwards()
        # Expiry, as the resolver's retention (graph/compact.py): each actor's id filed
        # under the bucket of its `expires_at`, a bucket checked once the cutoff has passed
        # all of it; then its actors wait in `_retiring` for `_expire` to get to them.
        self._bucket = window_seconds / EXPIRY_BUCKETS
        self._due: dict[int, list[str]] = {}
        self._checked_below = -math.inf
        self._retiring: deque[str] = deque()
        self._held: list[str] = []  # pinned when their turn came: tried again next time
        self.pinned: Container[str] = frozenset()

    @property
    def actor_count(self) -> int:
        return len(self._actors)

    def actors(self) -> Iterator[Actor]:
        """Every actor, with only its edges inside the window (expiry catches up first, and
        then the actors of the bucket the cutoff is in). An actor stored as its bytes is
        given as an `Actor` made from them, to read."""
        self.expire_some(sys.maxsize)
        cutoff = self.watermark - self.window_seconds
        for actor_id in [
            actor_id for actor_id, held in self._actors.items() if _expires_at(held) < cutoff
        ]:
            actor = self._taken(actor_id)
            if actor is not None and actor_id not in self.pinned:
                self._expire_edges(actor, cutoff)
            self._settle(actor_id)
        return (
            held if isinstance(held, Actor) else Actor.from_bytes(actor_id, held)
            for actor_id, held in self._actors.items()
        )

    def actor(self, actor_id: str) -> Actor | None:
        """One actor, with only its edges inside the window (to read: see `actors`)."""
        actor = self._taken(actor_id)
        if actor is not None and actor_id not in self.pinned:
            self._expire_edges(actor, self.watermark - self.window_seconds)
        self._settle(actor_id)
        return actor if actor is not None and actor.edge_count else None

    def raised_level(self, actor_id: str) -> int:
        return self._raised.serial_level(actor_id)

    def forwarded_to(self, actor_id: str) -> str | None:
        return self._forward.get(actor_id)

    def mark_raised(self, alert: dict[str, Any]) -> None:
        """Record an alert that already exists (read back from the alerts topic)."""
        actor_id = alert["actor_id"]
        if alert.get("kind", "serial") == "brigade":
            self._raised.raise_brigade(actor_id)
        elif int(alert["level"]) > self._raised.serial_level(actor_id):
            self._raised.raise_serial(actor_id, int(alert["level"]))

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
        applied = self._apply(actor_id, report, now, links, watermark)
        self._settle(actor_id)
        return applied

    def _apply(
        self, actor_id: str, report: Report, now: float, links: Iterable[Link],
        watermark: float | None,
    ) -> Applied:  # fmt: skip
        moment = report.event_time
        stamp = max(self.watermark, moment) if watermark is None else watermark
        cutoff, actor = self._advance(actor_id, stamp)
        if moment < cutoff:
            return Applied(Outcome.TOO_OLD)
        if actor is None:
            actor = self._actors[actor_id] = Actor(actor_id)
        for link in links:
            actor.add_link(link)
        if report.text is not None:
            opener = opener_of(report.text)
            if opener is not None:
                actor.add_opener(opener, (report.offender_key,))
        victim, region = report.victim_key, report.victim_region
        encoded = _victim_code(victim)
        item = actor.find(victim, encoded)
        if item is None:
            self._schedule(actor, moment)  # first: its bytes carry the expiry time
            item = actor.new_edge(victim, region, moment, report.report_id, report.category,
                                  report.offender_key, encoded)  # fmt: skip
            actor.add_edge(item)
            self.live_edges += 1
            return Applied(Outcome.ACCEPTED, self._check(actor, now, (moment, region)))
        if _has_report(item, report.report_id):
            return Applied(Outcome.DUPLICATE)
        edge = actor.unpacked(item)
        first_seen = edge.first_seen
        if not edge.add_report(moment, report.victim_region, report.report_id, report.category,
                               report.offender_key):  # fmt: skip
            return Applied(Outcome.ACCEPTED)  # nothing the rule looks at changed
        if edge.first_seen != first_seen:
            actor.timeline = None
        return Applied(Outcome.ACCEPTED, self._check(actor, now))

    def erase(self, actor_id: str, offender: str | None, victim: str | None) -> None:
        """Erasure: the actor's edges made by account `offender` (whole edges, even when
        another account of the actor reported the same victim) or with `victim`."""
        actor = self._taken(actor_id)
        if actor is None:
            return
        encoded = b"" if victim is None else _victim_code(victim)
        gone = [
            item
            for item in actor.items()
            if (victim is not None and _is_victim(item, victim, encoded))
            or (offender is not None and actor.holds_account(item, offender))
        ]
        actor.remove_edges(gone)
        self.live_edges -= len(gone)
        if offender is not None:
            actor.forget_account(offender)
        actor.timeline = None
        if not actor.edge_count:
            del self._actors[actor_id]
        self._settle(actor_id)

    def erase_victim(self, victim: str, skip: Container[str] = frozenset()) -> None:
        """Erasure of a victim from every actor here (but those in `skip`)."""
        encoded = _victim_code(victim)
        for actor_id in [
            actor_id
            for actor_id, held in self._actors.items()
            if actor_id not in skip
            and (_blob_find(held, encoded) if isinstance(held, bytes) else held.find(victim))
            is not None
        ]:
            self.erase(actor_id, None, victim)

    def detach(
        self, absorbed: str, into: str, watermark: float | None = None
    ) -> dict[str, Any] | None:
        """Remove actor `absorbed` (merged into `into`); returns its state to absorb there."""
        if watermark is not None:
            self._advance(absorbed, watermark)
        self._forward.set(absorbed, into)
        held = self._actors.pop(absorbed, None)
        if held is None:
            return None
        actor = held if isinstance(held, Actor) else Actor.from_bytes(absorbed, held)
        self.live_edges -= actor.edge_count
        return actor.to_dict()

    def absorb(
        self, into: str, state: dict[str, Any], now: float, watermark: float | None = None
    ) -> tuple[Alert, ...]:
        """Fold a merged actor's state into actor `into` and check the rule at once."""
        alerts = self._absorb(into, state, now, watermark)
        self._settle(into)
        return alerts

    def _absorb(
        self, into: str, state: dict[str, Any], now: float, watermark: float | None
    ) -> tuple[Alert, ...]:
        cutoff, actor = self._advance(into, self.watermark if watermark is None else watermark)
        if actor is None:
            actor = self._actors[into] = Actor(into)
        actor.add_merged((state["actor_id"], *state["merged"]))
        for link in state["links"]:
            actor.add_link(Link.from_dict(link))
        for opener, accounts in state["openers"].items():
            actor.add_opener(opener, accounts)
        for document in state["edges"]:
            edge = Edge.from_dict(document)
            if edge.last_seen >= cutoff:
                self._insert(actor, edge)
        actor.timeline = None
        if not actor.edge_count:
            del self._actors[into]
            return ()
        return self._check(actor, now)

    def expire_some(self, budget: int) -> bool:
        """Expire up to `budget` actors' old edges, oldest first; True if more are due.

        Expiry only returns memory: the actor a record is applied to is always judged by
        its own window first (`_advance`). So it may trail the watermark, and does after a
        jump in event time (a partner's backlog replayed, a quiet partition waking up):
        the edges that left the window at once are then removed a slice at a time, by the
        records that follow and by the worker's expiry timer, instead of in one pass
        that held up the event loop (320 ms for 200,000 edges, seconds for millions)."""
        return self._expire(self.watermark - self.window_seconds, budget)

    def _advance(self, actor_id: str, watermark: float) -> tuple[float, Actor | None]:
        """Bring the graph to `watermark` and the actor to its own; returns the cutoff and
        the actor, if it has edges left."""
        cutoff = watermark - self.window_seconds
        if watermark > self.watermark:
            self.watermark = watermark
        self._expire(self.watermark - self.window_seconds, EXPIRE_PER_RECORD)
        actor = self._taken(actor_id)
        if actor is not None and actor.expires_at < cutoff:  # else no edge can be too old
            self._expire_edges(actor, cutoff)
            if not actor.edge_count:
                return cutoff, None  # expired whole, and gone from the graph
        return cutoff, actor

    def _taken(self, actor_id: str) -> Actor | None:
        """The actor as an `Actor`, stored as one until `_settle` (which every method that
        takes one calls before it returns)."""
        held = self._actors.get(actor_id)
        if held is None or isinstance(held, Actor):
            return held
        actor = self._actors[actor_id] = Actor.from_bytes(actor_id, held)
        return actor

    def _settle(self, actor_id: str) -> None:
        """Store the actor as its bytes alone again, if that is all it is."""
        held = self._actors.get(actor_id)
        if isinstance(held, Actor):
            bare = held.bare()
            if bare is not None:
                self._actors[actor_id] = bare

    def _insert(self, actor: Actor, edge: Edge) -> None:
        existing = actor.find(edge.victim)
        if existing is None:
            actor.add_edge(actor.compact(edge))
            self.live_edges += 1
        else:
            actor.unpacked(existing).merge(edge)
        self._schedule(actor, edge.last_seen)

    def _schedule(self, actor: Actor, last_seen: float) -> None:
        """Make sure the actor is filed for expiry no later than `last_seen`."""
        if last_seen < actor.expires_at:
            actor.expires_at = last_seen
            if last_seen // self._bucket < self._checked_below:
                self._retiring.append(actor.actor_id)  # an edge late in its window: due
            else:
                file_due(self._due, actor.actor_id, last_seen, self._bucket)

    def _check(
        self, actor: Actor, now: float, new_victim: tuple[float, str] | None = None
    ) -> tuple[Alert, ...]:
        """The rule, for an actor that just gained a victim (`new_victim`: their first
        report time and region) or changed in another way the rule looks at."""
        rule, count = self.rule, actor.edge_count
        if count < rule.min_regions and count < rule.brigade_victims:
            return ()  # too few victims for either kind of alert
        timeline = actor.timeline
        if timeline is None or new_victim is None:
            timeline = _Timeline(actor.victims(), rule.episode_hours * 3600.0)
            index = None
            # Kept only where a brigade can be, which is where it saves work; for a
            # handful of victims, sorting them again costs less than holding them twice.
            if count >= rule.brigade_victims:
                actor.timeline = timeline
        else:
            index = timeline.add(*new_victim)
        alerts = []
        raised = self._raised.serial_level(actor.actor_id)
        # The level never exceeds the episodes nor the regions: most actors stop here.
        bound = min(timeline.episodes, len(timeline.regions))
        if bound > raised and bound >= rule.min_regions:
            victims = actor.victims()
            level = rule.level(victims)
            if level > raised:
                self._raised.raise_serial(actor.actor_id, level)
                alerts.append(self._alert(actor, "serial", level, actor.edges(), now))
        if count >= rule.brigade_victims and not self._raised.brigade_raised(actor.actor_id):
            grew = timeline.episode_size(index) if index is not None else rule.brigade_victims
            if grew >= rule.brigade_victims:
                burst = rule.largest_episode(actor.victims())
                if len(burst) >= rule.brigade_victims:
                    self._raised.raise_brigade(actor.actor_id)
                    in_burst = {moment for moment, _ in burst}
                    chosen = [edge for edge in actor.edges() if edge.first_seen in in_burst]
                    level = len({edge.region for edge in chosen})
                    alerts.append(self._alert(actor, "brigade", level, chosen, now))
        return tuple(alerts)

    def _alert(self, actor: Actor, kind: str, level: int, edges: list[Edge], now: float) -> Alert:
        reveal = self.reveal
        # Each distinct token opened once: an actor's edges share a few accounts.
        accounts = {reveal(a) for a in {a for edge in edges for a in _items(edge._accounts)}}
        first_seen = min(edge.first_seen for edge in edges)
        last_seen = max(edge.last_seen for edge in edges)
        victims_by_region: dict[str, int] = {}
        for edge in edges:
            victims_by_region[edge.region] = victims_by_region.get(edge.region, 0) + 1
        victims_by_region = dict(sorted(victims_by_region.items()))
        links = [
            {"accounts": [reveal(account) for account in link.accounts], "signal": link.signal}
            for link in actor.links
        ]
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
            categories=tuple(sorted({c for edge in edges for c in _items(edge._categories)})),
            report_ids=tuple(
                sorted(
                    f"{edge.victim.split(':', 1)[0]}:{report_id}"
                    for edge in edges
                    for report_id in edge.report_id_values()
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

    def _expire(self, cutoff: float, budget: int) -> bool:
        """Remove the edges older than `cutoff` of up to `budget` actors (not pinned ones)
        filed under buckets the cutoff has passed; True if more such actors are left."""
        below = cutoff // self._bucket  # buckets under this one are wholly before the cutoff
        if below > self._checked_below:
            self._checked_below = below
            for bucket in passed_buckets(self._due, below):
                self._retiring.extend(bucket)
        retiring, held = self._retiring, self._held
        if not (retiring or held):
            return False  # nothing due: what nearly every record finds
        if held:
            retiring.extendleft(reversed(held))
            self._held = held = []
        while retiring and budget > 0:
            actor_id = retiring.popleft()
            stored = self._actors.get(actor_id)
            if stored is None or _expires_at(stored) >= cutoff:
                continue  # gone (expired, merged away), or filed again for later
            if actor_id in self.pinned:
                held.append(actor_id)
                continue
            budget -= 1
            actor = self._taken(actor_id)
            assert actor is not None
            actor.expires_at = math.inf
            self._expire_edges(actor, cutoff)
            if actor.edge_count:
                self._schedule(actor, min(_last_seen(item) for item in actor.items()))
                self._settle(actor_id)
        behind = bool(retiring)
        if not behind:
            self._actors = right_sized(self._actors)
            self._raised.fold()
            self._forward.fold()
        return behind

    def _expire_edges(self, actor: Actor, cutoff: float) -> None:
        """One actor's expiry, judged by its own record's watermark."""
        old = [item for item in actor.items() if _last_seen(item) < cutoff]
        if old:
            actor.timeline = None
            actor.remove_edges(old)
            self.live_edges -= len(old)
        if not actor.edge_count:
            del self._actors[actor.actor_id]
