"""Signal hubs in the log (agents/resolve.py:HubLog): one warning per period at most, with
every hub counted in one of them."""

from __future__ import annotations

import logging

import pytest

from agents.resolve import HubLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_hubs_are_logged_together_once_a_period_and_none_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    hubs = HubLog(every=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="agents.resolve"):
        hubs.add("device_id", 21)  # the first after a quiet spell: at once
        first = "signal hubs: 1 new (device_id 1); the most accounts on one: 21"
        assert _warnings(caplog) == [first]
        clock.now += 3
        hubs.add("ip", 40)
        hubs.add("device_id", 25)
        clock.now += 3
        hubs.add("ip", 22)
        hubs.flush()
        assert len(_warnings(caplog)) == 1  # held: the last warning is 6 s old
        clock.now += 4
        hubs.flush()
        assert _warnings(caplog)[1:] == [
            "signal hubs: 3 new (device_id 1, ip 2); the most accounts on one: 40"
        ]
        clock.now += 60
        hubs.flush()  # nothing held: nothing said
        assert len(_warnings(caplog)) == 2
        hubs.add("ip", 30)
        clock.now += 1
        hubs.add("ip", 31)
        hubs.flush(due_or_not=True)  # the worker stops: nothing held is left unsaid
        assert _warnings(caplog)[3:] == ["signal hubs: 1 new (ip 1); the most accounts on one: 31"]
