# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""What a report becomes at intake, before linkwatch keeps or forwards any of it.

The identifiers are replaced by pseudonyms (graph/identity.py), the free text by its
opener (the normalised first sentence, the only part of the text linkwatch uses), and the
reporter is dropped. Everything downstream (the internal topics, the resolver, the graphs,
snapshots, logs) sees only this.
"""

from __future__ import annotations

from graph.aliases import BLANK_SIGNAL, DEGENERATE_VALUES, opener_of
from graph.contract import Report
from graph.identity import Pseudonyms

__all__ = ["pseudonymise"]


def pseudonymise(report: Report, pseudonyms: Pseudonyms) -> Report:
    signals = {
        name: BLANK_SIGNAL
        if value.strip().lower() in DEGENERATE_VALUES
        else pseudonyms.signal(name, value)
        for name, value in report.offender_signals.items()
    }
    return Report(
        report.report_id,
        report.platform,
        report.event_time,
        report.category,
        pseudonyms.offender(report.offender_account),
        pseudonyms.victim(report.platform, report.victim_account),
        report.victim_region,
        signals,
        opener_of(report.text),
        None,
    )
