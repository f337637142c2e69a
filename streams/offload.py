"""Child processes for a stage's stateless work: how one worker uses more than one core.

The worker's event loop runs every agent on one core (the GIL). Intake (validation and
pseudonymisation) needs no state, so its agent sends each batch to child processes and
awaits their answers while the loop runs the stateful agents. A child is a plain
`multiprocessing` spawn process that answers one batch at a time over a pipe; it dies with
the worker (PR_SET_PDEATHSIG), and when it dies on its own the batch is done in the worker
itself and the child is started again, so a batch is never lost.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from streams.metrics import Metrics

__all__ = ["Offload"]

log = logging.getLogger(__name__)

C = TypeVar("C")  # what the work needs, made once per process (e.g. the pseudonym keys)
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1


class Offload(Generic[C, R]):
    """`count` child processes that each apply `work(*args, context)` to what they are sent.

    `work` and `make_context` must be importable functions (they are pickled by name).
    With `count` 0 the work runs in the calling process: same results, one core.
    """

    def __init__(
        self,
        count: int,
        work: Callable[..., R],
        make_context: Callable[[], C],
        metrics: Metrics,
    ) -> None:
        self.work = work
        self.make_context = make_context
        self.metrics = metrics
        self._context: C | None = None  # made only if the work runs here
        self._children = [_Child(work, make_context) for _ in range(count)]

    @property
    def width(self) -> int:
        """How many pieces `map` runs at once."""
        return max(1, len(self._children))

    async def map(self, pieces: Sequence[tuple[Any, ...]]) -> list[R]:
        """Apply the work to each piece (at most `width`), concurrently; results in order."""
        if len(pieces) > self.width:
            raise ValueError(f"{len(pieces)} pieces for {self.width} processes")
        if not self._children:
            return [self.here(piece) for piece in pieces]
        children = self._children[: len(pieces)]
        runs = (self._run(child, piece) for child, piece in zip(children, pieces, strict=True))
        return list(await asyncio.gather(*runs))

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def close(self) -> None:
        for child in self._children:
            child.stop()

    async def _run(self, child: _Child[C, R], piece: tuple[Any, ...]) -> R:
        try:
            return await child.call(piece)
        except (EOFError, OSError) as exc:
            # A bug or the OOM killer: never bad input (the work never raises on that).
            log.error("an intake process died (%s, exit code %s); starting another",
                      type(exc).__name__, child.exitcode)  # fmt: skip
            self.metrics.internal_errors.inc()
            child.restart()
            return self.here(piece)

    def here(self, piece: tuple[Any, ...]) -> R:
        """The work on one piece in this process."""
        if self._context is None:
            self._context = self.make_context()
        return self.work(*piece, self._context)


class _Child(Generic[C, R]):
    """One child process and the thread that talks to it (sends and waits off the loop)."""

    def __init__(self, work: Callable[..., R], make_context: Callable[[], C]) -> None:
        self._target = (work, make_context)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="offload")
        self._start()

    def _start(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._conn, theirs = spawn.Pipe()
        self._process = spawn.Process(
            target=_serve, args=(theirs, *self._target), name="linkwatch-intake", daemon=True
        )
        self._process.start()
        theirs.close()

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    async def call(self, piece: tuple[Any, ...]) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._roundtrip, piece)

    def _roundtrip(self, piece: tuple[Any, ...]) -> R:
        self._conn.send(piece)
        answer: R = self._conn.recv()
        return answer

    def restart(self) -> None:
        self._process.kill()
        self._process.join(5)
        self._conn.close()
        self._start()

    def stop(self) -> None:
        self._conn.close()  # the child reads EOF and exits
        self._process.join(2)
        if self._process.is_alive():
            self._process.kill()
        self._thread.shutdown(wait=False)


def _serve(conn: Connection, work: Callable[..., Any], make_context: Callable[[], Any]) -> None:
    """The child: answer each piece with the work's result until the worker goes away."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the worker handles it and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = make_context()
    while True:
        try:
            piece = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(work(*piece, context))


def _die_with_parent() -> None:
    """SIGKILL this process when the worker that started it dies, however it dies."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux/glibc: the pipe's EOF still ends the child on a clean stop
    if os.getppid() != parent:  # the worker died before the signal was set
        os._exit(0)
