"""Fixtures shared by the unit tests of the worker's child processes."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["linkwatch", "an operator"])
def allocator_chosen_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment a worker runs in: on the C library's allocator, chosen by linkwatch
    (memory.use_system_allocator) or by an operator's own PYTHONMALLOC."""
    monkeypatch.setenv("PYTHONMALLOC", "malloc")
    if request.param == "linkwatch":
        monkeypatch.setenv("LINKWATCH_SYSTEM_ALLOCATOR", "malloc")
    else:
        monkeypatch.delenv("LINKWATCH_SYSTEM_ALLOCATOR", raising=False)
    return str(request.param)
