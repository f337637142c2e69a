"""Child processes for a stage's stateless work: how one worker uses more than one core.

The worker's event loop runs every agent on one core (the GIL). Intake (validation and
pseudonymisation) needs no state, so its agent sends each batch to child processes and
awaits their answers while the loop runs the stateful agents. A child is a plain
`multiprocessing` spawn process that answers one batch at a time over a socket pair; it
dies with the worker (PR_SET_PDEATHSIG), and when it dies on its own, or does not answer
within `timeout` seconds, it is killed, the batch is done in the worker itself and the
child is started again, so a batch is never lost.

The event loop itself writes each batch to the socket and reads the answer when the
selector says it is there (`loop.sock_sendall`, `loop.sock_recv_into`): no thread hands
it over. A thread did at first, and a round trip of 220 reports then took 20 ms, of which
the child's work was 8: the rest was the thread waiting for the GIL (up to its 5 ms switch
interval, twice) and then for the loop's turn.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from streams.metrics import Metrics

__all__ = ["TIMEOUT", "Offload"]

log = logging.getLogger(__name__)

C = TypeVar("C")  # what the work needs, made once per process (e.g. the pseudonym keys)
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
# Each message on the socket: its length, then a pickle.
_LENGTH = struct.Struct("!Q")
# A child that has not answered a batch in this long is taken as hung. The largest batch
# (16,000 reports) takes about half a second.
TIMEOUT = 30.0


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
        timeout: float = TIMEOUT,
    ) -> None:
        self.work = work
        self.make_context = make_context
        self.metrics = metrics
        self.timeout = timeout
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
            return await asyncio.wait_for(child.call(piece), self.timeout)
        except (EOFError, OSError) as exc:  # TimeoutError is an OSError
            # A bug, the OOM killer or a stopped process: never bad input (the work never
            # raises on that).
            what = "did not answer" if isinstance(exc, TimeoutError) else "died"
            log.error("an intake process %s (%s, exit code %s); starting another",
                      what, type(exc).__name__, child.exitcode)  # fmt: skip
            self.metrics.internal_errors.inc()
            child.restart()
            return self.here(piece)

    def here(self, piece: tuple[Any, ...]) -> R:
        """The work on one piece in this process."""
        if self._context is None:
            self._context = self.make_context()
        return self.work(*piece, self._context)


class _Child(Generic[C, R]):
    """One child process and the worker's end of the socket pair to it."""

    def __init__(self, work: Callable[..., R], make_context: Callable[[], C]) -> None:
        self._target = (work, make_context)
        self._start()

    def _start(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._socket, theirs = socket.socketpair()
        self._socket.setblocking(False)  # the loop's sock_* calls wait in the selector
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
        """Send one piece and wait for its result, on the running loop."""
        loop = asyncio.get_running_loop()
        payload = pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL)
        await loop.sock_sendall(self._socket, _LENGTH.pack(len(payload)))
        await loop.sock_sendall(self._socket, payload)
        (length,) = _LENGTH.unpack(await _received(loop, self._socket, _LENGTH.size))
        answer: R = pickle.loads(await _received(loop, self._socket, length))
        return answer

    def restart(self) -> None:
        self._process.kill()
        self._process.join(5)
        self._socket.close()
        self._start()

    def stop(self) -> None:
        self._socket.close()  # the child reads EOF and exits
        self._process.join(2)
        if self._process.is_alive():
            self._process.kill()


async def _received(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytearray:
    """Exactly `size` bytes from a non-blocking socket; EOFError if it closes first."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = await loop.sock_recv_into(sock, view[got:])
        if count == 0:
            raise EOFError("the child process closed its socket")
        got += count
    return buffer


def _serve(sock: socket.socket, work: Callable[..., Any], make_context: Callable[[], Any]) -> None:
    """The child: answer each piece with the work's result until the worker goes away."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the worker handles it and closes the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = make_context()
    try:
        while True:
            (length,) = _LENGTH.unpack(_read(sock, _LENGTH.size))
            piece = pickle.loads(_read(sock, length))
            answer = pickle.dumps(work(*piece, context), protocol=pickle.HIGHEST_PROTOCOL)
            sock.sendall(_LENGTH.pack(len(answer)))
            sock.sendall(answer)
    except (EOFError, OSError):  # the worker closed its end, or went
        return


def _read(sock: socket.socket, size: int) -> bytearray:
    """Exactly `size` bytes from a blocking socket; EOFError if it closes first."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise EOFError("the worker closed its socket")
        got += count
    return buffer


def _die_with_parent() -> None:
    """SIGKILL this process when the worker that started it dies, however it dies."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux/glibc: the pipe's EOF still ends the child on a clean stop
    if os.getppid() != parent:  # the worker died before the signal was set
        os._exit(0)
