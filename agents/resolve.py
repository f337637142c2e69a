"""Resolve agent: link offender accounts into actors, and route each report to its actor.

It consumes the one-partition identity topic, so a single resolver sees every report in one
order: every worker then agrees which actor an account belongs to. It sends each report to
`actor-reports` keyed by its actor, and for each merge a `merge` record to the partition of
the actor that was absorbed (the graph agent there moves that actor's state on).

The resolver's state and the work on it (`Resolvers`, agents/children.py) live in a child
process of the worker by default (`LINKWATCH_RESOLVER_PROCESS`): the agent sends it each
identity message as it came, and sends on the packed records that come back. That takes
the resolver off the event loop, which then has more of its core for the other agents
(README, "Performance").
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from agents.children import Resolved, Resolvers, discard, on_resolvers
from agents.replay import TAKE, WITHIN, HeldAcks, Message, PartitionedState, Send
from streams import memory
from streams.metrics import Metrics
from streams.offload import RENEW_EVERY, RENEW_IDLE, StateProcess
from streams.settings import Settings

__all__ = ["HubLog", "ResolveStage", "Resolved", "Resolvers", "make_resolve_agent"]

log = logging.getLogger(__name__)

# A resolver process whose state has shrunk to under 1/RENEW_SHRUNK of the most it held,
# from at least RENEW_FROM accounts, hands the state to a fresh process once no identity
# message has come for RENEW_IDLE seconds (at most once per RENEW_EVERY): the old heap's
# pages, each kept by a few survivors of the state that was, go back whole
# (`StateProcess.renew`). The state moves as a pickle in a file of the data dir, the
# stream held meanwhile.
RENEW_FROM = 20_000
RENEW_SHRUNK = 8
# Signal hubs are logged together, one warning per this many seconds at most (`HubLog`).
HUB_LOG_EVERY = 10.0


class HubLog:
    """The signal hubs the resolver declares, logged as one warning per `every` seconds at
    most: the count by signal and the most accounts one reached.

    Each hub is also a message on the signal-hubs topic and a count in
    `linkwatch_signal_hubs_total`; the log says that they are happening. A warning per hub
    flooded it during a backlog (668 lines in 400,000 of the bench's reports) and cost the
    worker's loop about 2% of its time (README, "Performance", change 46). The first hub
    after a quiet spell is logged at once; `flush` logs those held since, once due."""

    def __init__(self, every: float = HUB_LOG_EVERY, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self._clock = clock
        self._held: dict[str, int] = {}
        self._most = 0  # accounts, the most a held hub reached
        self._logged_at = -math.inf

    def add(self, signal: str, accounts: int) -> None:
        self._held[signal] = self._held.get(signal, 0) + 1
        self._most = max(self._most, accounts)
        self.flush()

    def flush(self, due_or_not: bool = False) -> None:
        """Log the hubs held, if any, and if the last warning is `every` seconds old (or
        whenever, with `due_or_not`: the worker is stopping)."""
        now = self._clock()
        if not self._held or (now - self._logged_at < self.every and not due_or_not):
            return
        by_signal = ", ".join(f"{signal} {count}" for signal, count in sorted(self._held.items()))
        log.warning("signal hubs: %d new (%s); the most accounts on one: %d",
                    sum(self._held.values()), by_signal, self._most)  # fmt: skip
        self._held, self._most, self._logged_at = {}, 0, now


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
            environment=memory.split_heap_environment(),
        )
        self._generations = itertools.count()
        # partition -> the generation of its newest state, from the moment `_create` makes
        # it: a state being rebuilt by replay is not in `partitions` yet, and must live.
        self._newest: dict[int, int] = {}
        self._sending: asyncio.Future[None] | None = None  # the last message's sends made
        self._applied_at = time.monotonic()  # when the last identity message came
        self._renewed_at = time.monotonic()
        self._most_held = 0  # accounts, since the resolver process started (`_sends`)
        self.hubs = HubLog()
        self.partitions: PartitionedState[_Handle] = PartitionedState(
            settings.bootstrap,
            settings.identity_topic,
            self._create,
            self._apply,
            metrics.handoffs.labels(topic=settings.identity_topic).inc,
        )

    async def expire_some(self) -> bool:
        """A step of the resolver's retention (`AliasResolver.forget_some`); True if more
        is due."""
        self.hubs.flush()  # those held since the last warning, once due
        owned = self.partitions.owned
        live = [(partition, generation) for partition, generation in self._newest.items()
                if partition in owned]  # fmt: skip
        behind, accounts = await self.state.call("forget_some", live)
        self.metrics.accounts.set(accounts)
        if not behind and self._renewal_due(accounts):
            self._renewed_at = time.monotonic()
            if await self.state.renew(("export",), ("restore",), discard):
                log.info("the resolver's state moved to a fresh process (%d accounts, from "
                         "%d at most)", accounts, self._most_held)  # fmt: skip
                self._most_held = accounts
        return bool(behind)

    def _renewal_due(self, accounts: int) -> bool:
        now = time.monotonic()
        return (
            self._most_held >= RENEW_FROM
            and accounts * RENEW_SHRUNK < self._most_held
            and now - self._applied_at >= RENEW_IDLE
            and now - self._renewed_at >= RENEW_EVERY
        )

    def close(self) -> None:
        self.hubs.flush(due_or_not=True)
        self.state.close()

    async def _create(self, partition: int) -> _Handle:
        generation = next(self._generations)
        self._newest[partition] = generation
        await self.state.call("create", partition, generation)
        return _Handle(generation)

    async def _apply(
        self, partition: int, handle: _Handle, message: Message, replaying: bool
    ) -> list[Any]:
        """Send the message to the resolver and return at once: the future that comes back
        sends what it resolves to, once it is back, after what the messages before it sent
        (the resolver answers in order), and completes when Kafka has all of it. So a
        batch's messages are resolved back to back, with one wait for the lot."""
        self._applied_at = time.monotonic()
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
            self._most_held = max(self._most_held, resolved.accounts)
        if resolved.redelivered:
            # Counted where a redelivered report used to reach the graph's own check.
            metrics.reports.labels(outcome="duplicate").inc(resolved.redelivered)
        sends = []
        for signal, fingerprint, accounts in resolved.hubs:
            metrics.hubs.labels(signal=signal).inc()
            self.hubs.add(signal, accounts)
            value = {"signal": signal, "fingerprint": fingerprint, "accounts": accounts}
            sends.append(send(settings.hubs_topic, None, orjson.dumps(value), None, None, None))
        at = timestamp / 1000.0 if timestamp else None
        for target, pack in resolved.packs:
            sends.append(send(settings.actor_reports_topic, None, pack, target, at, None))
        return sends


def make_resolve_agent(stage: ResolveStage) -> Callable[[Any], Awaitable[None]]:
    """The agent body for the identity topic."""

    async def resolve_agent(stream: Any) -> None:
        acks = HeldAcks(stream)
        async for events in stream.take_events(TAKE, within=WITHIN):
            deliveries: list[Any] = []
            for event in events:
                for record in event.message.value:
                    deliveries += await stage.partitions.process(record.partition, record)
            await acks.hold(events, deliveries)

    return resolve_agent
