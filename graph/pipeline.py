"""The whole chain in-process: validate -> resolve -> rolling graph -> rule, with no broker.

The Faust agents call these same functions stage by stage; tests and the benchmark's
"no broker" figure call `Pipeline.feed`, so both share one code path.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from graph.contract import Rejection, Report, parse_report
from graph.identity import actor_id_for
from graph.rules import Alert, CrossRegionRule
from graph.window import RollingGraph

__all__ = ["Pipeline", "Routed", "Run", "route"]


@dataclass(frozen=True, slots=True)
class Routed:
    """A valid report and the actor it belongs to: what the intake stage forwards."""

    actor_id: str
    report: Report


def route(raw: bytes, secret: bytes) -> Routed | Rejection:
    """Validate one message and resolve its offender account to an actor."""
    parsed = parse_report(raw)
    if isinstance(parsed, Rejection):
        return parsed
    return Routed(actor_id_for(parsed.offender_key, secret), parsed)


@dataclass(slots=True)
class Run:
    """What feeding messages through the pipeline produced, in order."""

    alerts: list[Alert] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """validate -> resolve -> graph -> rule over one RollingGraph, synchronously."""

    def __init__(self, secret: bytes, window_seconds: float, rule: CrossRegionRule) -> None:
        self.secret = secret
        self.graph = RollingGraph(window_seconds, rule)

    def feed(self, messages: Iterable[bytes], now: float | None = None) -> Run:
        run = Run()
        for raw in messages:
            routed = route(raw, self.secret)
            if isinstance(routed, Rejection):
                run.rejections.append(routed)
                run.outcomes["rejected"] += 1
                continue
            applied = self.graph.apply(
                routed.actor_id, routed.report, time.time() if now is None else now
            )
            run.outcomes[applied.outcome] += 1
            if applied.alert is not None:
                run.alerts.append(applied.alert)
        return run
