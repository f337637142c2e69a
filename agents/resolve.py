"""Resolve agent: link offender accounts into actors, and route each report to its actor.

It consumes the one-partition identity topic, so a single resolver sees every report in one
order: every worker then agrees which actor an account belongs to. It sends each report to
`actor-reports` keyed by its actor, and for each merge a `merge` record to the partition of
the actor that was absorbed (the graph agent there moves that actor's state on).

The resolver's state and the work on it (`Resolvers`) live in a child process of the worker
by default (`LINKWATCH_RESOLVER_PROCESS`): the agent sends it each identity message as it
came, and sends on the packed records that come back. That takes the resolver off the
event loop, which then has more of its core for the other agents (README, "Performance").
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import orjson

from agents.replay import TAKE, WITHIN, Message, PartitionedState, Send, packs
from graph.aliases import AliasResolver
from graph.contract import Report
from graph.records import erasure_records, resolution_records
from graph.watermark import LowWatermark
from streams import memory
from streams.kafka import actor_partition
from streams.metrics import Metrics
from streams.offload import StateProcess
from streams.settings import Settings

__all__ = ["ResolveStage", "Resolved", "Resolvers", "make_resolve_agent"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Resolving:
    """One identity partition's state: which account is whose, and how far the stream has got."""

    generation: int  # which `create` made it (Resolvers below)
    resolver: AliasResolver
    watermark: LowWatermark


class Resolved(NamedTuple):
    """What one identity message became: what the worker sends on, logs and counts."""

    packs: list[tuple[int, bytes]]  # (actor-reports partition, packed records), in order
    hubs: list[tuple[str, str, int]]  # (signal, fingerprint, accounts) of new hubs
    erased: list[str | None]  # the actor of each erasure applied (None: not an offender)
    errors: list[str]  # what could not be read
    accounts: int  # accounts the resolver holds now; -1: not known (nothing was resolved)


_NOTHING = Resolved([], [], [], [], -1)


class Resolvers:
    """The resolver state of the identity partitions this worker owns (in practice the
    topic's one partition), and the work on it. It lives in the resolver process
    (`LINKWATCH_RESOLVER_PROCESS`, streams/offload.py:StateProcess), or in the worker.

    Each state is made by `create` with a generation number, and every call names the
    generation it means: a call for a state that a rebalance has since replaced does
    nothing, as a call on a dropped object did when the state lived in the worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._states: dict[int, _Resolving] = {}
        self._accounts_at_trim = 0
        self._frozen_at = time.monotonic()

    def create(self, partition: int, generation: int) -> None:
        settings = self.settings
        resolver = AliasResolver(
            settings.secret_bytes,
            settings.max_accounts_per_signal,
            settings.link_by_text,
            settings.window_seconds,
        )
        watermark = LowWatermark(settings.partitions)
        self._states[partition] = _Resolving(generation, resolver, watermark)

    def apply(
        self, partition: int, generation: int, value: bytes | None, replaying: bool
    ) -> Resolved:
        """One identity message: rows (reports) and objects (erasures, `linkwatch erase`),
        resolved in order into packed records for each actor-reports partition."""
        state = self._states.get(partition)
        if state is None or state.generation != generation:
            return _NOTHING
        resolver = state.resolver
        try:
            rows = orjson.loads(value or b"")
            reports = [(row, row if type(row) is dict else Report.from_row(row)) for row in rows]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return _NOTHING._replace(errors=["an unreadable batch"])
        partitions = self.settings.partitions
        by_partition: dict[int, list[list[Any]]] = {}
        hubs: list[tuple[str, str, int]] = []
        erased: list[str | None] = []
        errors: list[str] = []
        for row, report in reports:
            if not isinstance(report, Report):
                try:
                    erasure = row["erase"]
                    offender, victim = str(erasure["offender"]), str(erasure["victim"])
                except (KeyError, TypeError):
                    errors.append("an unreadable erasure")
                    continue
                actor_id = resolver.erase(offender)
                if replaying:
                    continue
                erased.append(actor_id)
                for target, key, record in erasure_records(actor_id, offender, victim, partitions):
                    by_partition.setdefault(target, []).append([key, record])
                continue
            # Its input partition and its offset there (rows from older workers lack these).
            source = row[10] if len(row) > 10 else 0
            offset = row[11] if len(row) > 11 else -1
            stamp = state.watermark.observe(source, report.event_time, offset)
            resolution = resolver.resolve(report, stamp)
            if replaying:
                continue
            hubs += [(hub.signal, hub.fingerprint, hub.accounts) for hub in resolution.hubs]
            for key, record in resolution_records(resolution, row[:10]):
                target = actor_partition(key, partitions)
                by_partition.setdefault(target, []).append([key, record])
        # One message per partition: the records of this batch for that partition, in order.
        packed = [(target, orjson.dumps(pack))
                  for target, entries in sorted(by_partition.items())
                  for pack in packs(entries)]  # fmt: skip
        return Resolved(packed, hubs, erased, errors, resolver.accounts)

    def forget_some(self, live: list[tuple[int, int]]) -> tuple[bool, int]:
        """A step of retention (`AliasResolver.forget_some`) for the states still owned,
        (partition, generation) in `live`; the others are dropped. Returns (more is due,
        accounts held)."""
        wanted = dict(live)
        for partition, state in list(self._states.items()):
            if wanted.get(partition) != state.generation:
                del self._states[partition]
        behind = False
        for state in self._states.values():
            behind |= state.resolver.forget_some()
        accounts = sum(state.resolver.accounts for state in self._states.values())
        self._keep_memory_down(accounts)
        return behind, accounts

    def _keep_memory_down(self, accounts: int) -> None:
        """What the worker does for its own heap (streams/app.py, agents/graph.py), for this
        one's when it is a process of its own: freeze the survivors now and then, and hand
        pages back once retention has freed half the accounts."""
        now = time.monotonic()
        if now - self._frozen_at >= memory.FREEZE_EVERY:
            memory.freeze()
            self._frozen_at = now
        if accounts * 2 < self._accounts_at_trim:
            memory.release()
            self._accounts_at_trim = accounts
        else:
            self._accounts_at_trim = max(self._accounts_at_trim, accounts)


def on_resolvers(method: str, *args: Any) -> Any:
    """`Resolvers.method(*args)` on the state passed last: the resolver process's work."""
    *arguments, resolvers = args
    return getattr(resolvers, method)(*arguments)


@dataclass(slots=True)
class _Handle:
    """The worker's name for one partition's resolver state, which may live elsewhere."""

    generation: int


class ResolveStage:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        send: Send,
        on_lost: Callable[[str], None] = lambda why: None,
    ) -> None:
        """`on_lost(why)` is called if the resolver process dies and takes the state with
        it (the worker restarts in place); the agent then fails too."""
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.state = StateProcess(
            on_resolvers,
            partial(Resolvers, settings),
            "lw-resolve",
            on_lost,
            in_process=not settings.resolver_process,
        )
        self._generations = itertools.count()
        self._sending: asyncio.Future[None] | None = None  # the last message's sends made
        self.partitions: PartitionedState[_Handle] = PartitionedState(
            settings.bootstrap, settings.identity_topic, self._create, self._apply
        )

    async def expire_some(self) -> bool:
        """A step of the resolver's retention (`AliasResolver.forget_some`); True if more
        is due."""
        live = [(partition, handle.generation) for partition, handle in self.partitions.items()]
        behind, accounts = await self.state.call("forget_some", live)
        self.metrics.accounts.set(accounts)
        return bool(behind)

    def close(self) -> None:
        self.state.close()

    async def _create(self, partition: int) -> _Handle:
        generation = next(self._generations)
        await self.state.call("create", partition, generation)
        return _Handle(generation)

    async def _apply(
        self, partition: int, handle: _Handle, message: Message, replaying: bool
    ) -> list[Any]:
        """Send the message to the resolver and return at once: the future that comes back
        sends what it resolves to, once it is back, after what the messages before it sent
        (the resolver answers in order), and completes when Kafka has all of it. So a
        batch's messages are resolved back to back, with one wait for the lot."""
        answer = self.state.submit("apply", partition, handle.generation, message.value, replaying)
        timestamp = getattr(message, "timestamp", None)
        after, self._sending = self._sending, asyncio.get_running_loop().create_future()
        return [asyncio.ensure_future(self._send_on(answer, timestamp, after, self._sending))]

    async def _send_on(
        self,
        answer: asyncio.Future[Resolved],
        timestamp: int | None,
        after: asyncio.Future[None] | None,
        sent: asyncio.Future[None],
    ) -> None:
        """Send what one message resolved to, once `after` (the message before) has sent
        its own; then `sent` lets the next one go, and this waits for Kafka's acks."""
        try:
            resolved = await answer
            if after is not None:
                await after
            deliveries = [await send for send in self._sends(resolved, timestamp)]
        finally:
            if not sent.done():
                sent.set_result(None)
        await asyncio.gather(*deliveries)

    def _sends(self, resolved: Resolved, timestamp: int | None) -> list[Awaitable[Any]]:
        """Log and count what one message resolved to; its sends in order, not yet made."""
        settings, send, metrics = self.settings, self.send, self.metrics
        for error in resolved.errors:
            log.error("skipped %s on %s", error, settings.identity_topic)
            metrics.internal_errors.inc()
        for actor_id in resolved.erased:
            log.info("erasure applied (actor %s)", actor_id or "none: not an offender here")
        if resolved.accounts >= 0:
            metrics.accounts.set(resolved.accounts)
        sends = []
        for signal, fingerprint, accounts in resolved.hubs:
            metrics.hubs.labels(signal=signal).inc()
            log.warning("signal hub: a %s value reached %d accounts", signal, accounts)
            value = {"signal": signal, "fingerprint": fingerprint, "accounts": accounts}
            sends.append(send(settings.hubs_topic, None, orjson.dumps(value), None, None, None))
        at = timestamp / 1000.0 if timestamp else None
        for target, pack in resolved.packs:
            sends.append(send(settings.actor_reports_topic, None, pack, target, at, None))
        return sends


def make_resolve_agent(stage: ResolveStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the identity topic."""

    async def resolve_agent(stream: Any) -> None:
        async for events in stream.take_events(TAKE, within=WITHIN):
            deliveries: list[Any] = []
            for event in events:
                for record in event.message.value:
                    deliveries += await stage.partitions.process(record.partition, record)
            await asyncio.gather(*deliveries)

    return resolve_agent
