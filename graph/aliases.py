# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
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
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from graph.compact import file_due, passed_buckets, right_sized
from graph.contract import Report
from graph.identity import actor_id_for

__all__ = [
    "BLANK_SIGNAL",
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
# Retention work (roots and values checked) per report, and per slice of the worker's
# timer: a report creates at most one of each, so four per report keep up as the watermark
# moves on steadily; 1,000 take 1-2 ms.
FORGET_PER_REPORT = 4
FORGET_SLICE = 1_000
# `_Root.value_seen` of a root that holds no value.
_NO_VALUE = -math.inf
# A value's key in `_values` and `_hubs`: one character for its signal, then the value
# (16 bytes a value less than the signal's name).
_SIGNAL_CODES = {name: chr(1 + n) for n, name in enumerate((*STRONG_SIGNALS, OPENER))}


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
# What a degenerate value becomes at intake (graph/privacy.py): still recognisably blank.
BLANK_SIGNAL = "s_blank"

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


@dataclass(slots=True, init=False)  # one per report: not frozen, `__init__` written (see Report)
class Resolution:
    actor_id: str
    links: tuple[Link, ...]
    merges: tuple[Merge, ...]
    hubs: tuple[Hub, ...]
    # The newest event time in the stream so far: the one watermark every partition uses.
    watermark: float

    def __init__(
        self,
        actor_id: str,
        links: tuple[Link, ...] = (),
        merges: tuple[Merge, ...] = (),
        hubs: tuple[Hub, ...] = (),
        watermark: float = 0.0,
    ) -> None:
        self.actor_id = actor_id
        self.links = links
        self.merges = merges
        self.hubs = hubs
        self.watermark = watermark


class _Value:
    """The accounts that used one signal value, each with when it last did (event time),
    in the order they first did; `seen` is the newest of those times.

    Most values are held by their one account's root instead (`_Root`); a `_Value` holds
    one that is not a root account's first, or that a second account used. Many of those
    are still one account's, so that account is held alone, its last use being `seen`,
    and a dict is made when a second one comes (a dict of one costs 184 bytes)."""

    __slots__ = ("accounts", "seen")

    def __init__(self, account: str, moment: float) -> None:
        self.accounts: str | dict[str, float] = account
        self.seen = moment

    # Pickled when a resolver process hands its state on (`AliasResolver.__reduce__`).
    def __reduce__(self) -> tuple[Any, ...]:
        if isinstance(self.accounts, str):
            return (_Value, (self.accounts, self.seen))
        return (_Value, ("", self.seen), self.accounts)

    def __setstate__(self, accounts: dict[str, float]) -> None:
        self.accounts = accounts

    def use(self, account: str, moment: float) -> bool:
        """Record that `account` used the value at `moment`; True if it never had."""
        accounts = self.accounts
        if isinstance(accounts, str):
            if accounts == account:
                self.seen = max(self.seen, moment)
                return False
            accounts = self.accounts = {accounts: self.seen}
        used = accounts.get(account)
        accounts[account] = moment if used is None else max(used, moment)
        self.seen = max(self.seen, moment)
        return used is None

    def first(self) -> str:
        accounts = self.accounts
        return accounts if isinstance(accounts, str) else next(iter(accounts))

    def count(self) -> int:
        return 1 if isinstance(self.accounts, str) else len(self.accounts)

    def drop_stale(self, cutoff: float, known: Container[str]) -> None:
        """Forget uses from before `cutoff`, and by accounts no longer `known`."""
        accounts = self.accounts
        if isinstance(accounts, str):
            return  # its one account is the one using it now
        for account in [a for a, used in accounts.items() if used < cutoff or a not in known]:
            del accounts[account]

    def drop(self, account: str) -> bool:
        """Forget one account's uses; True if none are left."""
        accounts = self.accounts
        if isinstance(accounts, str):
            return accounts == account
        accounts.pop(account, None)
        return not accounts


class _Root:
    """An actor of the union-find, held at its root account's entry in `_parent`.

    It also holds the newest use of one signal value (`value_seen`) when its root account
    was the first and so far only account to use it: `_values` then maps that value to
    the root itself, instead of to a `_Value` of 64 bytes (most values are one account's:
    its device, its email). The slot fits in the block the root takes anyway. A root that
    leaves `_parent` (absorbed by a merge, forgotten) still holds its value for `_values`
    until the value is used by another account or forgotten."""

    __slots__ = ("account", "actor_id", "members", "order", "seen", "value_seen")

    def __init__(self, account: str, actor_id: str, order: int, seen: float) -> None:
        self.account = account  # the root account: the actor's first-seen account
        self.actor_id = actor_id  # a keyed hash of its founding account: cached
        self.order = order  # when its founding account was first seen
        self.seen = seen  # the newest report time of any of its accounts
        self.members: list[str] | None = None  # the other accounts merged into it
        self.value_seen = _NO_VALUE  # the newest use of the value it holds, if it holds one

    # Pickled when a resolver process hands its state on (`AliasResolver.__reduce__`).
    def __reduce__(self) -> tuple[Any, ...]:
        made = (self.account, self.actor_id, self.order, self.seen)
        return (_Root, made, (self.members, self.value_seen))

    def __setstate__(self, state: tuple[list[str] | None, float]) -> None:
        self.members, self.value_seen = state


class AliasResolver:
    """Union-find over offender accounts, with retention.

    With `window_seconds`, what the resolver knows is held to the same window as the graph:
    an actor (all its accounts) is forgotten once none of them has a report inside the
    window, and a signal value once no account has used it inside the window. A link is
    made only through uses inside the window, and a report older than the window links
    nothing (the graph drops it as too old). Forgetting runs as the watermark passes whole
    buckets of 1/256 of a window, so it costs nothing per report.
    """

    def __init__(
        self,
        secret: bytes,
        max_accounts_per_signal: int = 20,
        link_by_text: bool = False,
        window_seconds: float | None = None,
    ) -> None:
        if max_accounts_per_signal < 2:
            raise ValueError("max_accounts_per_signal must be at least 2")
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.secret = secret
        self.max_accounts_per_signal = max_accounts_per_signal
        self.link_by_text = link_by_text
        self.window_seconds = window_seconds
        # Every known account: its parent account, or, for an actor's root account, the
        # actor (one table, where four per-root tables cost 150 bytes an actor more).
        self._parent: dict[str, str | _Root] = {}
        # Every signal value used inside the window: the accounts that used it and when,
        # in a `_Value`, or in the root of its one account (most values: see `_Root`).
        self._values: dict[str, _Value | _Root] = {}
        self._hubs: set[str] = set()
        # Ids kept by actors whose founding account was erased (`erase`): that account, back,
        # founds a new actor, which must not share the id (a merge between two actors of one
        # id went round between the graph's partitions forever). Never emptied: the graph
        # may still forward the id. One per such erasure, which is rare.
        self._kept_ids: set[str] = set()
        self._order = 0
        self.watermark = -math.inf
        # Retention: roots and values filed by the bucket of their newest time, checked
        # when the watermark has passed the whole bucket (and then forgotten or refiled).
        self._bucket = (window_seconds or math.inf) / 256
        self._roots_due: dict[int, list[str]] = {}
        self._values_due: dict[int, list[str]] = {}
        self._checked_below = -math.inf
        # What passed buckets held, still to check: a watermark that jumps a whole window
        # (a backlog replayed, a quiet input partition waking up) leaves everything here,
        # and a few are checked per report and more per timer slice (`forget_some`),
        # instead of all in one pass that held up the event loop (150 ms for 200,000
        # accounts; meanwhile `resolve` treats a stale actor as forgotten).
        self._roots_retiring: deque[str] = deque()
        self._values_retiring: deque[str] = deque()

    # Pickled whole when a resolver process hands its state to a fresh one, whose heap
    # holds only what is live (streams/offload.py:StateProcess.renew). A compiled class
    # cannot be made without its arguments, so it says how to make it and what to set
    # then; `tests/unit/test_state_process.py` checks that a copy goes on as the original.
    def __reduce__(self) -> tuple[Any, ...]:
        made = (self.secret, self.max_accounts_per_signal, self.link_by_text, self.window_seconds)
        state = (self._parent, self._values, self._hubs, self._order, self.watermark,
                 self._roots_due, self._values_due, self._checked_below,
                 self._roots_retiring, self._values_retiring, self._kept_ids)  # fmt: skip
        return (AliasResolver, made, state)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self._parent, self._values, self._hubs, self._order, self.watermark,
         self._roots_due, self._values_due, self._checked_below,
         self._roots_retiring, self._values_retiring, self._kept_ids) = state  # fmt: skip

    @property
    def accounts(self) -> int:
        return len(self._parent)

    @property
    def hubs(self) -> int:
        return len(self._hubs)

    @property
    def values(self) -> int:
        return len(self._values)

    def actor_of(self, account: str) -> str:
        return self._find(account).actor_id

    def resolve(self, report: Report, watermark: float | None = None) -> Resolution:
        """Link one report's account. `watermark` is the stream's (graph/watermark.py);
        without one, the newest event time resolved so far stands in for it."""
        self.watermark = max(self.watermark, report.event_time if watermark is None else watermark)
        cutoff = self._retain()
        account, moment = report.offender_key, report.event_time
        if moment < cutoff:  # too old to link; the graph drops it, nothing is remembered
            known_actor = account in self._parent
            actor = self.actor_of(account) if known_actor else self._new_actor_id(account)
            return Resolution(actor, watermark=self.watermark)
        new = account not in self._parent
        if not new:
            root = self._find(account)
            if root.seen < cutoff:
                # Its actor left the window and retention has not got to it yet: as forgotten.
                self._forget(root)
                new = True
            elif moment > root.seen:
                root.seen = moment
        if new:
            root = _Root(account, self._new_actor_id(account), self._order, moment)
            self._parent[account] = root
            self._file(self._roots_due, account, moment)
            self._order += 1
        new_actor = root.actor_id if new else None
        links: list[Link] = []
        merges: list[Merge] = []
        hubs: list[Hub] = []
        for signal, value in self._strong_signals(report):
            key = _SIGNAL_CODES[signal] + value
            if key in self._hubs:
                continue
            if value == BLANK_SIGNAL or value.strip().lower() in DEGENERATE_VALUES:
                self._hubs.add(key)
                hubs.append(Hub(signal, self._fingerprint(signal, value), 1))
                continue
            held = self._values.get(key)
            if held is None:  # a value first used now links nothing yet
                if root.account == account and root.value_seen == _NO_VALUE:
                    root.value_seen = moment  # held by the root (see `_Root`)
                    self._values[key] = root
                else:
                    self._values[key] = _Value(account, moment)
                self._file(self._values_due, key, moment)
                continue
            if isinstance(held, _Root):
                if held.account == account:  # its one account, again: nothing new to link
                    held.value_seen = max(held.value_seen, moment)
                    continue
                known = self._values[key] = _Value(held.account, held.value_seen)
                held.value_seen = _NO_VALUE
            else:
                known = held
            if not known.use(account, moment):
                continue  # this account used it before: nothing new to link
            known.drop_stale(cutoff, self._parent)  # those link nothing
            if known.count() > self.max_accounts_per_signal:
                self._hubs.add(key)
                del self._values[key]
                hubs.append(Hub(signal, self._fingerprint(signal, value), known.count()))
                continue
            first = known.first()
            merge = self._union(first, account)
            if merge is not None:
                links.append(Link((first, account), signal))
                # An account first seen in this very report has no state anywhere to move.
                if merge.absorbed != new_actor:
                    merges.append(merge)
        return Resolution(
            self._find(account).actor_id, tuple(links), tuple(merges), tuple(hubs),
            self.watermark,
        )  # fmt: skip

    def _new_actor_id(self, account: str) -> str:
        """The id of a new actor founded by `account`: a keyed hash of it, unless an actor
        whose founding account was erased lives on under that id (`_kept_ids`)."""
        actor_id = actor_id_for(account, self.secret)
        if actor_id in self._kept_ids:
            actor_id = actor_id_for(f"{account}\x00{self._order}", self.secret)
        return actor_id

    def _file(self, due: dict[int, list[str]], key: str, moment: float) -> None:
        if self.window_seconds is not None:
            file_due(due, key, moment, self._bucket)

    def forget_some(self) -> bool:
        """A slice of retention; True if more is due. Retention only returns memory: what a
        report links to never depends on how far it has got (see `resolve`), so it may
        trail the watermark, and a timer may drive it."""
        self._retain(FORGET_SLICE)
        return bool(self._roots_retiring or self._values_retiring)

    def _retain(self, budget: int = FORGET_PER_REPORT) -> float:
        """Forget up to `budget` of the roots and values the watermark has left behind;
        returns the cutoff."""
        if self.window_seconds is None:
            return -math.inf
        cutoff = self.watermark - self.window_seconds
        below = cutoff // self._bucket  # buckets before this one are wholly before cutoff
        if below > self._checked_below:
            self._checked_below = below
            for bucket in passed_buckets(self._roots_due, below):
                self._roots_retiring.extend(bucket)
            for bucket in passed_buckets(self._values_due, below):
                self._values_retiring.extend(bucket)
        roots, values = self._roots_retiring, self._values_retiring
        if not (roots or values):
            return cutoff
        while roots and budget > 0:
            root, budget = roots.popleft(), budget - 1
            actor = self._parent.get(root)
            if isinstance(actor, _Root):  # still a root: not merged away, not forgotten
                if actor.seen < cutoff:
                    self._forget(actor)
                else:
                    self._file(self._roots_due, root, actor.seen)
        while values and budget > 0:
            key, budget = values.popleft(), budget - 1
            held = self._values.get(key)
            if held is None:
                continue
            seen = held.value_seen if isinstance(held, _Root) else held.seen
            if seen < cutoff:
                self._drop_value(key)
            else:
                self._file(self._values_due, key, seen)
        if not (roots or values):  # caught up: the tables may shrink
            self._values = right_sized(self._values)
            self._parent = right_sized(self._parent)
        return cutoff

    def erase(self, account: str) -> str | None:
        """Remove one offender account (erasure): the actor it belonged to, or None if it
        was not known. The actor's other accounts stay one actor, under the same id; the
        signal values it used forget it. Costs a scan of the values: erasure is rare."""
        if account not in self._parent:
            return None
        root = self._find(account)
        for key in list(self._values):
            held = self._values[key]
            if held.account == account if isinstance(held, _Root) else held.drop(account):
                self._drop_value(key)
        rest = [member for member in (root.account, *(root.members or ())) if member != account]
        del self._parent[account]
        if rest:  # the first remaining account is the root now, with the actor's identity
            if actor_id_for(account, self.secret) == root.actor_id:
                self._kept_ids.add(root.actor_id)  # its founder: see `_kept_ids`
            new_root = rest[0]
            for member in rest[1:]:
                self._parent[member] = new_root
            root.account, root.members = new_root, rest[1:] or None
            self._parent[new_root] = root
            self._file(self._roots_due, new_root, root.seen)
        for bucket in self._roots_due.values():
            if account in bucket:
                bucket[:] = [root for root in bucket if root != account]
        return root.actor_id

    def _drop_value(self, key: str) -> None:
        """Forget a signal value; a root that held it may hold another."""
        held = self._values.pop(key)
        if isinstance(held, _Root):
            held.value_seen = _NO_VALUE

    def _forget(self, root: _Root) -> None:
        """Forget an actor whose every account's last report has left the window."""
        for account in (root.account, *(root.members or ())):
            del self._parent[account]

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

    def _find(self, account: str) -> _Root:
        parent = self._parent
        node = parent[account]
        if isinstance(node, _Root):
            return node
        root = node  # walk up to the root account
        above = parent[root]
        while not isinstance(above, _Root):
            root, above = above, parent[above]
        while account != root:  # path compression
            below = parent[account]
            parent[account] = root
            account = below  # type: ignore[assignment]  # below the root: an account
        return above

    def _union(self, first: str, second: str) -> Merge | None:
        a, b = self._find(first), self._find(second)
        if a is b:
            return None
        older, newer = (a, b) if a.order < b.order else (b, a)
        self._parent[newer.account] = older.account
        older.seen = max(older.seen, newer.seen)
        older.members = [*(older.members or ()), newer.account, *(newer.members or ())]
        return Merge(absorbed=newer.actor_id, into=older.actor_id)

    def _fingerprint(self, signal: str, value: str) -> str:
        key = f"{signal}\x00{value}"  # the key before `_SIGNAL_CODES`: the same fingerprints
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()[:16]
