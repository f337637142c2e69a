"""The whole chain in-process: validate -> resolve aliases -> rolling graph -> rule, no broker.

The Faust agents run these same steps stage by stage, with topics in between; tests and
the benchmark's "no broker" figure call `Pipeline.feed`, so both share one code path.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from graph.aliases import AliasResolver, Hub
from graph.contract import Rejection, parse_report
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
    """validate -> resolve -> graph -> rule over one resolver and one RollingGraph."""

    def __init__(
        self,
        secret: bytes,
        window_seconds: float,
        rule: CrossRegionRule,
        max_accounts_per_signal: int = 20,
        link_by_text: bool = False,
    ) -> None:
        self.resolver = AliasResolver(secret, max_accounts_per_signal, link_by_text)
        self.graph = RollingGraph(window_seconds, rule)

    def feed(self, messages: Iterable[bytes], now: float | None = None) -> Run:
        run = Run()
        for raw in messages:
            moment = time.time() if now is None else now
            report = parse_report(raw)
            if isinstance(report, Rejection):
                run.rejections.append(report)
                run.outcomes["rejected"] += 1
                continue
            resolution = self.resolver.resolve(report)
            run.hubs.extend(resolution.hubs)
            for merge in resolution.merges:
                state = self.graph.detach(merge.absorbed, merge.into)
                if state is not None:
                    run.alerts.extend(self.graph.absorb(merge.into, state, moment))
            applied = self.graph.apply(resolution.actor_id, report, moment, resolution.links)
            run.outcomes[applied.outcome] += 1
            run.alerts.extend(applied.alerts)
        return run
