# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The actor-reports record protocol: how reports and merges reach the partition graphs.

The resolver turns each report into records keyed by actor id. For a merge of actor Y into
actor X it sends, in this order:
- `merge` (key Y) to Y's partition: its owner detaches Y and sends its state on as
- `absorb` (key X) to X's partition, which folds it into X and checks the rule;
- `await` (key X) to X's partition, which holds X's later records until Y's absorb arrives,
  so a merge is applied before the reports that follow it, as in a sequential run;
- `report` (key X): the report itself, with the links it created.

Every record carries the resolver's watermark (the newest event time in the whole stream
when the report was resolved), and an actor's window is judged by the watermark of the
record being applied. So an actor's alerts depend only on its own records in order, never
on how partitions interleave or how many there are.

A `PartitionGraph` applies these records to one partition's RollingGraph. It is pure and
deterministic for a given order, so replaying a partition rebuilds it, holds included.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graph.aliases import AliasResolver, Link, Resolution
from graph.contract import Report
from graph.rules import Alert
from graph.watermark import LowWatermark
from graph.window import Applied, Outcome, RollingGraph

__all__ = [
    "EVERY_ACTOR",
    "Handled",
    "InvalidRecord",
    "PartitionGraph",
    "Routed",
    "erasure_records",
    "graph_row",
    "partition_of",
    "read_rows",
    "resolution_records",
    "route_rows",
]

# The key of a record meant for every actor of a partition (a victim's erasure).
EVERY_ACTOR = "*"

Record = dict[str, Any]


class InvalidRecord(ValueError):
    """A record on the internal topic that linkwatch did not write (a bug, never user input)."""


def resolution_records(resolution: Resolution, row: list[Any]) -> list[tuple[str, Record]]:
    """The records one resolved report (`Report.to_row`) becomes, each with the actor id it
    is keyed by."""
    stamp = resolution.watermark
    records: list[tuple[str, Record]] = []
    for merge in resolution.merges:
        merge_record = {"kind": "merge", "from": merge.absorbed, "into": merge.into}
        records.append((merge.absorbed, merge_record | {"watermark": stamp}))
        records.append((merge.into, {"kind": "await", "from": merge.absorbed, "watermark": stamp}))
    links = [link.to_dict() for link in resolution.links]
    report_record = {"kind": "report", "report": row, "links": links, "watermark": stamp}
    records.append((resolution.actor_id, report_record))
    return records


def erasure_records(
    actor_id: str | None, offender: str, victim: str, partitions: int
) -> list[tuple[int, str, Record]]:
    """(partition, key, record) for one person's erasure: their reports as an offender
    leave their actor, and as a victim every partition's actors forget them."""
    records: list[tuple[int, str, Record]] = []
    if actor_id is not None:
        records.append((partition_of(actor_id, partitions), actor_id,
                        {"kind": "erase", "offender": offender}))  # fmt: skip
    records += [(p, EVERY_ACTOR, {"kind": "erase", "victim": victim}) for p in range(partitions)]
    return records


@dataclass(slots=True)
class Routed:
    """What one identity message became (`route_rows`)."""

    # actor-reports partition -> its `[key, record]` entries, in order
    entries: dict[int, list[list[Any]]] = field(default_factory=dict)
    hubs: list[tuple[str, str, int]] = field(default_factory=list)  # signal, fingerprint, accounts
    erased: list[str | None] = field(default_factory=list)  # each erasure's actor (None: none)
    errors: list[str] = field(default_factory=list)  # what could not be read
    redelivered: int = 0  # reports resolved before, sent again by intake: not routed again


def graph_row(row: list[Any]) -> list[Any]:
    """A report's row (`Report.to_row`) as the graph is sent it: without the offender's
    signals, which only the resolver uses. The actor-reports topic then holds no copy of
    the pseudonymised signal values (the links a report made name their signals), and a
    report's record is smaller to encode, send and decode: a tenth of the bench's
    actor-reports bytes (README, "Performance", change 47)."""
    sent = row[:10]
    sent[7] = None
    return sent


# An identity message's row read: the row, its report (None: an erasure), and the report's
# input partition and offset there (rows from older workers lack these: 0 and -1).
Row = tuple[Any, Report | None, int, int]


def read_rows(rows: list[Any]) -> list[Row]:
    """One identity message's rows, read before any is resolved: ValueError or TypeError if
    a report is not a row (`Report.to_row`, then its input partition and offset)."""
    read: list[Row] = []
    for row in rows:
        if type(row) is dict:  # an erasure, read as it is applied (`route_rows`)
            read.append((row, None, 0, -1))
            continue
        source: int = row[10] if len(row) > 10 else 0
        offset: int = row[11] if len(row) > 11 else -1
        read.append((row, Report.from_row(row), source, offset))
    return read


def route_rows(
    rows: list[Row],
    resolver: AliasResolver,
    watermark: LowWatermark,
    partitions: int,
    replaying: bool,
) -> Routed:
    """Resolve one identity message's rows (`read_rows`) in order, into records for each
    actor-reports partition: reports, and erasures (`{"erase": {"offender": ...,
    "victim": ...}}`). Replaying, the state is rebuilt and nothing is routed.

    A report this resolver has resolved before (intake sent it again after a crash: its
    input offset is at or below one already counted, graph/watermark.py) is not resolved
    or routed again, only counted. Its records went on the first time, and resolved again
    after an erasure it would bring the erased person back.

    Here, in the compiled core, rather than in the resolver process's interpreted code:
    `Resolvers.apply` took 16 us a report with the loop there, 10.5 with it here (medians
    in process, README "Performance", change 20)."""
    routed = Routed()
    entries = routed.entries
    for row, report, source, offset in rows:
        if report is None:
            try:
                erasure = row["erase"]
                offender, victim = str(erasure["offender"]), str(erasure["victim"])
            except (KeyError, TypeError):
                routed.errors.append("an unreadable erasure")
                continue
            actor_id = resolver.erase(offender)
            if replaying:
                continue
            routed.erased.append(actor_id)
            for target, key, record in erasure_records(actor_id, offender, victim, partitions):
                entries.setdefault(target, []).append([key, record])
            continue
        if watermark.seen(source, offset):
            if not replaying:
                routed.redelivered += 1
            continue
        stamp = watermark.observe(source, report.event_time, offset)
        resolution = resolver.resolve(report, stamp)
        if replaying:
            continue
        for hub in resolution.hubs:
            routed.hubs.append((hub.signal, hub.fingerprint, hub.accounts))
        for key, record in resolution_records(resolution, graph_row(row)):
            entries.setdefault(partition_of(key, partitions), []).append([key, record])
    return routed


@dataclass(slots=True, init=False)  # one per record: `__init__` written (see Report)
class Handled:
    """What one record did: report outcomes, alerts raised, and records to send on."""

    outcomes: list[Outcome]
    alerts: list[Alert]
    sends: list[tuple[str, Record]]

    def __init__(
        self,
        outcomes: list[Outcome] | None = None,
        alerts: list[Alert] | None = None,
        sends: list[tuple[str, Record]] | None = None,
    ) -> None:
        self.outcomes = [] if outcomes is None else outcomes
        self.alerts = [] if alerts is None else alerts
        self.sends = [] if sends is None else sends

    def extend(self, other: Handled) -> None:
        self.outcomes += other.outcomes
        self.alerts += other.alerts
        self.sends += other.sends


@dataclass(slots=True)
class _Hold:
    """An actor's records not yet applied, in order; `await` records block until their
    absorb has arrived, and an arrived absorb waits for its `await` to reach the head.

    Absorbs are counted, not just noted, per absorbed actor: after a crash the resolver
    sends a merge's `merge` and `await` again, and the graph may send its absorb again, so
    several of each can be in flight, and each `await` takes one absorb. (With one slot
    per absorbed actor, two absorbs that arrived while the head waited for another actor
    became one, and the second `await` then held its actor's records for good: the
    SIGKILL test's last flake.)"""

    records: deque[Record] = field(default_factory=deque)
    arrived: dict[str, deque[Record]] = field(default_factory=dict)


class PartitionGraph:
    """One partition's RollingGraph behind the record protocol."""

    def __init__(self, graph: RollingGraph) -> None:
        self.graph = graph
        self._holds: dict[str, _Hold] = {}
        # A held actor's edges must wait for its held records: expiry passes it by.
        graph.pinned = self._holds
        # Absorbs applied before an `await` was there to take them, counted per (into,
        # absorbed): a redelivered absorb, or one that arrived before its `await`. A later
        # `await` takes one of them instead of blocking.
        self._early: dict[tuple[str, str], int] = {}

    @property
    def held_records(self) -> int:
        return sum(len(hold.records) for hold in self._holds.values())

    def handle_entries(self, entries: list[Any], now: float) -> tuple[Handled, int]:
        """Apply one packed message's `[key, record]` entries in order: what they did,
        together, and how many could not be read (each skipped, the rest applied). The
        graph agent's loop, here so that it runs compiled ("Performance", change 24)."""
        done = Handled()
        unreadable = 0
        for entry in entries:
            try:
                key, record = entry
                actor = str(key)
                if record.get("kind") == "report" and actor not in self._holds:
                    # Nearly every record: what `handle` would do, without a Handled of its own.
                    applied = self._apply_report(actor, record, now)
                    done.outcomes.append(applied.outcome)
                    if applied.alerts:
                        done.alerts.extend(applied.alerts)
                    continue
                handled = self.handle(actor, record, now)
            except (InvalidRecord, KeyError, TypeError, ValueError, AttributeError):
                # Only linkwatch writes this topic: a bug or a foreign writer, never input.
                unreadable += 1
                continue
            done.extend(handled)
        return done, unreadable

    def handle(self, key: str, record: Record, now: float) -> Handled:
        kind = record.get("kind")
        if kind == "absorb":
            return self._arrive(record, now)
        if kind == "erase" and key == EVERY_ACTOR:
            return self._erase_everywhere(record)
        if kind not in ("report", "merge", "await", "erase"):
            raise InvalidRecord(f"unknown record kind {kind!r}")
        actor = str(record["from"]) if kind == "merge" else key
        if kind in ("merge", "await") and str(record["from"]) == str(record.get("into", key)):
            raise InvalidRecord("an actor merged into itself")  # would go round forever
        if kind == "await" and self._take_early(actor, str(record["from"])):
            return Handled()
        hold = self._holds.get(actor)
        if hold is None and kind != "await":
            return self._apply(actor, record, now)
        if hold is None:
            hold = self._holds[actor] = _Hold()
        hold.records.append(record)
        return self._drain(actor, now)

    def _arrive(self, record: Record, now: float) -> Handled:
        into, absorbed = str(record["into"]), str(record["from"])
        if into == absorbed:
            raise InvalidRecord("an actor absorbed into itself")
        onward = self.graph.forwarded_to(into)
        if onward is not None:  # `into` itself merged away meanwhile: pass it on
            return Handled(sends=[(onward, record | {"into": onward})])
        hold = self._holds.get(into)
        awaited = hold is not None and any(
            held["kind"] == "await" and held["from"] == absorbed for held in hold.records
        )
        if hold is None or not awaited:
            self._add_early(into, absorbed)
            return self._absorb(record, now)
        hold.arrived.setdefault(absorbed, deque()).append(record)
        return self._drain(into, now)

    def _add_early(self, into: str, absorbed: str, count: int = 1) -> None:
        key = (into, absorbed)
        self._early[key] = self._early.get(key, 0) + count

    def _take_early(self, into: str, absorbed: str) -> bool:
        """Take one absorb already applied for this `await`; False if there is none."""
        key = (into, absorbed)
        count = self._early.get(key, 0)
        if count == 0:
            return False
        if count == 1:
            del self._early[key]
        else:
            self._early[key] = count - 1
        return True

    def _drain(self, actor: str, now: float) -> Handled:
        """Apply the actor's held records from the head until an unanswered `await`."""
        handled = Handled()
        hold = self._holds[actor]
        while hold.records:
            head = hold.records[0]
            if head["kind"] == "await":
                waiting = hold.arrived.get(str(head["from"]))
                if not waiting:
                    return handled
                absorb = waiting.popleft()
                if not waiting:
                    del hold.arrived[str(head["from"])]
                hold.records.popleft()
                handled.extend(self._absorb(absorb, now))
            else:
                hold.records.popleft()
                handled.extend(self._apply(actor, head, now))
        del self._holds[actor]
        # Absorbs no `await` here took (redelivered ones): applied now, as an absorb with
        # no `await` waiting is, and counted for an `await` still to come.
        for absorbed, waiting in hold.arrived.items():
            for absorb in waiting:
                handled.extend(self._absorb(absorb, now))
            self._add_early(actor, absorbed, len(waiting))
        return handled

    def _erase_everywhere(self, record: Record) -> Handled:
        """A victim's erasure: every actor of this partition forgets them; a held actor
        when its turn comes, after the records that were before the erasure."""
        victim = str(record["victim"])
        for hold in self._holds.values():
            hold.records.append({"kind": "erase", "victim": victim})
        self.graph.erase_victim(victim, skip=self._holds)
        return Handled()

    def _apply(self, actor: str, record: Record, now: float) -> Handled:
        if record["kind"] == "merge":
            return self._merge(record)
        if record["kind"] == "erase":
            self.graph.erase(actor, record.get("offender"), record.get("victim"))
            return Handled()
        applied = self._apply_report(actor, record, now)
        return Handled([applied.outcome], list(applied.alerts))

    def _apply_report(self, actor: str, record: Record, now: float) -> Applied:
        try:
            report = Report.from_row(record["report"])
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidRecord(f"not a report row: {type(error).__name__}") from None
        found = record.get("links")
        links: Iterable[Link] = [Link.from_dict(link) for link in found] if found else ()
        return self.graph.apply(actor, report, now, links, _stamp(record))

    def _merge(self, record: Record) -> Handled:
        absorbed, into = str(record["from"]), str(record["into"])
        stamp = _stamp(record)
        state = self.graph.detach(absorbed, into, stamp) or _empty_state(absorbed)
        # Always sent, even empty: the survivor's partition holds its records until it comes.
        absorb = {"kind": "absorb", "into": into, "from": absorbed, "state": state}
        return Handled(sends=[(into, absorb | {"watermark": stamp})])

    def _absorb(self, record: Record, now: float) -> Handled:
        into, state = str(record["into"]), record["state"]
        return Handled(alerts=list(self.graph.absorb(into, state, now, _stamp(record))))


def _stamp(record: Record) -> float | None:
    """The record's watermark; JSON has no -Infinity (orjson writes null), and a stream
    whose partitions have not all reported yet has no watermark: that is -inf, not None
    (None means "no stamp at all", for a RollingGraph used on its own)."""
    if "watermark" not in record:
        return None
    stamp = record["watermark"]
    return -math.inf if stamp is None else float(stamp)


def _empty_state(actor_id: str) -> dict[str, Any]:
    return {"actor_id": actor_id, "edges": [], "links": [], "openers": {}, "merged": []}


def partition_of(key: str, partitions: int) -> int:
    """The partition of an actor id: stable across processes and machines (CRC-32)."""
    return zlib.crc32(key.encode()) % partitions
