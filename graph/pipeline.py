"""The whole chain in-process: validate -> resolve aliases -> partition graphs -> rule.

The Faust agents run these same steps stage by stage with Kafka topics in between; here
the topics are in-memory queues. Tests and the benchmark's "no broker" figure call
`Pipeline.feed`, so both share one code path with the agents.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from graph.aliases import AliasResolver, Hub
from graph.contract import Rejection, parse_report
from graph.identity import Pseudonyms, pseudonym_key_for
from graph.privacy import pseudonymise
from graph.records import PartitionGraph, erasure_records, partition_of, resolution_records
from graph.rules import Alert, CrossRegionRule
from graph.window import RollingGraph

__all__ = ["Pipeline", "Run"]


@dataclass(slots=True)
class Run:
    """What feeding messages through the pipeline produced, in order."""

    alerts: list[Alert] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    hubs: list[Hub] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """validate -> resolve -> graph -> rule over one resolver and `partitions` graphs."""

    def __init__(
        self,
        secret: bytes,
        window_seconds: float,
        rule: CrossRegionRule,
        max_accounts_per_signal: int = 20,
        link_by_text: bool = False,
        partitions: int = 1,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.pseudonyms = pseudonyms or Pseudonyms(pseudonym_key_for(secret))
        self.resolver = AliasResolver(secret, max_accounts_per_signal, link_by_text, window_seconds)
        self.partitions = [
            PartitionGraph(RollingGraph(window_seconds, rule, self.pseudonyms.reveal))
            for _ in range(partitions)
        ]

    def actor_of(self, account_key: str) -> str:
        """The actor id of an offender account given as the platform names it."""
        platform, _, account = account_key.partition(":")
        return self.resolver.actor_of(f"{platform}:{self.pseudonyms.offender(account)}")

    def erase(self, platform: str, account: str) -> None:
        """`linkwatch erase`, in process: as the resolve and graph agents apply it."""
        offender = f"{platform}:{self.pseudonyms.offender(account)}"
        victim = f"{platform}:{self.pseudonyms.victim(platform, account)}"
        actor_id = self.resolver.erase(offender)
        for partition, key, record in erasure_records(
            actor_id, offender, victim, len(self.partitions)
        ):
            self.partitions[partition].handle(key, record, 0.0)

    def feed(
        self, messages: Iterable[bytes], now: float | None = None, watermark: float | None = None
    ) -> Run:
        """Run messages through; `watermark` is for callers that replay a stream whose
        watermark they know (the evaluation's ideal detector); by default it is derived."""
        run = Run()
        for raw in messages:
            moment = time.time() if now is None else now
            report = parse_report(raw)
            if isinstance(report, Rejection):
                run.rejections.append(report)
                run.outcomes["rejected"] += 1
                continue
            report = pseudonymise(report, self.pseudonyms)
            resolution = self.resolver.resolve(report, watermark)
            run.hubs.extend(resolution.hubs)
            # The actor-reports topic, as a queue: records and the absorbs they cause.
            queue = deque(resolution_records(resolution, report.to_row()))
            while queue:
                key, record = queue.popleft()
                partition = self.partitions[partition_of(key, len(self.partitions))]
                handled = partition.handle(key, record, moment)
                run.outcomes.update(str(outcome) for outcome in handled.outcomes)
                run.alerts.extend(handled.alerts)
                queue.extend(handled.sends)
        return run
