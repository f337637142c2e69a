"""Child processes for a stage's work: how one worker uses more than one core.

The worker's event loop runs every agent on one core (the GIL). Two kinds of work leave it:

- `Offload`: stateless work. Intake (validation and pseudonymisation) needs no state, so
  its agent sends each batch to child processes and awaits their answers while the loop
  runs the other agents. When a child dies on its own, or does not answer within
  `timeout` seconds, it is killed, the batch is done in the worker itself and the child is
  started again, so a batch is never lost.
- `StateProcess`: a stage's state and the work on it. The resolver's tables live in one
  child, and the resolve agent sends it each identity message and sends on what comes
  back. State cannot be redone elsewhere: a child that dies or hangs takes it along, and
  the worker is told (`on_lost`), which restarts it in place, so the state is rebuilt by
  replay exactly as after a SIGKILL.

A child is a plain `multiprocessing` spawn process that answers one request at a time over
a socket pair, and it dies with the worker (PR_SET_PDEATHSIG). It runs under Linux's
SCHED_BATCH policy (`_yield_to_the_loop`): its share of the CPU is the same, but waking up
does not let it take a busy core from the worker's event loop, which every report goes
through. The loop writes it a batch and goes on; where a core is idle the child starts at
once, and where both are busy it waits for the loop's time slice to end (README,
"Performance", change 49). After a burst of requests it
rests (`_rest`): its context's `idle()`, if it has one, drops what only sped the burst up
(the pseudonyms' caches), and its free pages go back to the system.

An `Offload` child keeps no state, so it runs on Python's own allocator, faster than the
C library's that the worker and a `StateProcess` child use (memory.stateless_allocator),
and once idle after a burst it is replaced by a fresh one (`Offload.renew_when_idle`):
pymalloc keeps an arena while one object in it lives.

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
import math
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from streams.memory import release, split_heap, stateless_allocator, tune_collector

if TYPE_CHECKING:  # a child imports this module: it needs no Prometheus
    from streams.metrics import Metrics

__all__ = ["TIMEOUT", "Offload", "StateProcess"]

log = logging.getLogger(__name__)

C = TypeVar("C")  # what the work needs, made once per process (e.g. the pseudonym keys)
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# Each message on the socket: its length, then a pickle.
_LENGTH = struct.Struct("!Q")
# A child that has not answered a batch in this long is taken as hung. The largest batch
# (16,000 reports) takes about half a second.
TIMEOUT = 30.0
# A child that has been sent this much since it last trimmed its heap, and then waits this
# long (seconds) for the next request, gives its free pages back (`memory.release`): the
# batches it decoded and answered are garbage by then, spread through its heap.
TRIM_AFTER_BYTES = 4 << 20
TRIM_IDLE = 0.5
# An intake process runs on Python's own allocator (memory.stateless_allocator), which
# keeps a 1 MiB arena for as long as one object in it lives: after a burst it kept 57 MB
# where it started at 37. So a process that has been sent this much since it started is
# replaced by a fresh one once the offload has had nothing to do for this long (seconds),
# at most once a minute. It holds no state: nothing is lost, and the fresh one is ready
# before it takes the old one's place.
RENEW_AFTER_BYTES = 16 << 20
RENEW_IDLE = 2.0
RENEW_EVERY = 60.0
# What each end of a socket pair may have written and not yet read (SO_SNDBUF; on a Unix
# socket the writer's buffer is the whole queue). A batch of a few thousand reports and
# its answer are a few hundred KB: with the default, 208 KB, the writer stopped part way
# until the reader had taken the first part, and the worker's loop took the rest of an
# answer, or sent the rest of a batch, only at a later turn, after whatever agent had the
# loop meanwhile. Linux caps what is asked at `net.core.wmem_max` (and doubles it); with
# the usual 208 KB cap a buffer is 416 KB, where this machine's 4 MB gives 8 MB.
SOCKET_BUFFER = 4 << 20


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
        self._environment = stateless_allocator()
        self._children = [_Child(work, make_context, "lw-intake", self._environment)
                          for _ in range(count)]  # fmt: skip
        self._busy = 0  # maps under way
        self._idle_since = time.monotonic()
        self._renewed_at = -math.inf

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
        self._busy += 1
        try:
            return list(await asyncio.gather(*runs))
        finally:
            self._busy -= 1
            self._idle_since = time.monotonic()

    async def renew_when_idle(self, every: float = 1.0) -> None:
        """Replace each process that has been sent RENEW_AFTER_BYTES since it started with
        a fresh one, once the offload has been idle RENEW_IDLE seconds (at most once per
        RENEW_EVERY). Runs until cancelled: the agent runs it beside its loop."""
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            if self._busy or now - self._idle_since < RENEW_IDLE:
                continue
            if now - self._renewed_at < RENEW_EVERY:
                continue
            for index, child in enumerate(self._children):
                if child.sent < RENEW_AFTER_BYTES:
                    continue
                fresh = _Child(self.work, self.make_context, "lw-intake", self._environment)
                try:  # ready (imported, context made) before it takes the old one's place
                    await asyncio.wait_for(fresh.call(None), self.timeout)
                except (EOFError, OSError):
                    fresh.stop()
                    continue
                except asyncio.CancelledError:  # the agent is stopping
                    fresh.stop()
                    raise
                if self._busy:  # a batch went to the old one meanwhile: next time
                    fresh.stop()
                    break
                self._children[index] = fresh
                self._renewed_at = time.monotonic()
                await child.retire()

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


class StateProcess(Generic[C]):
    """State made by `make_state()` and kept in one child process: `submit(*args)` sends a
    request at once and returns a future of `work(*args, state)` computed there.

    Requests are answered one at a time in the order submitted, and more can be in flight,
    so a caller with many (an agent's batch) pays one wait rather than a round trip each.
    A caller that stops waiting does not upset the order: every answer is read. With
    `in_process`, the state lives in this process and requests run at once, on one core.

    A child that dies, or keeps a request waiting for `timeout` seconds, has taken the
    state with it: `on_lost(why)` is called (the worker restarts in place) and every
    request in flight fails with `StateLost`. `work` and `make_state` must be picklable
    (functions by name, or `functools.partial` of them). `environment`: what the child's
    environment differs in (the resolver's: `memory.split_heap_environment`).
    """

    def __init__(
        self,
        work: Callable[..., Any],
        make_state: Callable[[], C],
        name: str,
        on_lost: Callable[[str], None],
        in_process: bool = False,
        timeout: float = TIMEOUT,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.work = work
        self.make_state = make_state
        self.name = name
        self.on_lost = on_lost
        self.in_process = in_process
        self.timeout = timeout
        self.environment = dict(environment or {})  # what the child's differs in
        self._state: C | None = None  # in_process only
        self._child: _Child[C, Any] | None = None  # by `start` or the first request
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._waiting: deque[asyncio.Future[Any]] = deque()  # answers to come, in order
        self._answers_due = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self._lost = ""
        self._held: list[bytes] | None = None  # requests held while the state moves (`renew`)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def moving(self) -> bool:
        """Whether the state is moving to a fresh child (`renew`): requests wait."""
        return self._held is not None

    def submit(self, *args: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        if self.in_process:
            if self._state is None:
                self._state = self.make_state()
            future.set_result(self.work(*args, self._state))
        elif self._lost:
            future.set_exception(StateLost(self._lost))
        else:
            self.start()
            self._waiting.append(future)
            self._answers_due.set()
            payload = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
            if self._held is not None:
                self._held.append(payload)
            else:
                self._outbox.put_nowait(payload)
        return future

    async def call(self, *args: Any) -> Any:
        return await self.submit(*args)

    def start(self) -> None:
        """Start the child now, on the running loop, rather than at the first request (a
        child takes a second or two to import what it needs)."""
        if self.in_process or self._child is not None or self._lost:
            return
        self._serve_with(_Child(self.work, self.make_state, self.name, self.environment))

    def _serve_with(self, child: _Child[C, Any]) -> None:
        self._child = child
        self._pumps = [asyncio.ensure_future(pump(child)) for pump in (self._write, self._read)]

    async def renew(
        self,
        export: tuple[Any, ...],
        restore: tuple[Any, ...],
        discard: Callable[[Any], None] = lambda exported: None,
    ) -> bool:
        """Move the state to a fresh child and retire the old one, whose heap goes back to
        the system whole; True if it moved. For a state that has shrunk after a burst:
        the allocator keeps a page while one object on it lives, so the pages of a state
        that was large stay resident, nearly empty, for the life of its process.

        `work(*export, state)` in the old child writes the state where the fresh one can
        read it and returns where (None: it could not), and `work(*restore, where, state)`
        in the fresh one (made by `make_state`) takes it in; `discard(where)` if no child
        did. Meanwhile new requests are held, then sent to the fresh child in order; the
        requests before are answered by the old one. If the fresh child fails, the old
        one goes on as if nothing had happened."""
        if self.in_process or self._lost or self._waiting or self._child is None:
            return False
        old = self._child
        fresh: _Child[C, Any] = _Child(self.work, self.make_state, self.name, self.environment)
        moved = False
        try:
            await asyncio.wait_for(fresh.call(None), self.timeout)  # started and ready
            if self._waiting or self._child is not old:
                return False  # a request came meanwhile: another time
            exported = self.submit(*export)
            self._held = []
            where = await exported  # so every request before it has been answered
            if where is None:
                return False
            for pump in self._pumps:
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            self._pumps = []
            try:
                await asyncio.wait_for(fresh.call((*restore, where)), self.timeout)
            except BaseException:
                discard(where)
                raise
            self._serve_with(fresh)
            moved = True
        except (EOFError, OSError) as exc:  # the fresh child died or hung
            log.error("the %s process could not take the state over (%s); the old one "
                      "keeps it", self.name, type(exc).__name__)  # fmt: skip
        except StateLost:  # the old one died meanwhile: `on_lost` has been called
            pass
        finally:
            if not moved:
                fresh.stop()
                if not self._pumps and not self._lost:
                    self._serve_with(old)
            held, self._held = self._held or [], None
            for payload in held:
                self._outbox.put_nowait(payload)
        if moved:
            await old.retire()
        return moved

    async def _write(self, child: _Child[C, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                payload = await self._outbox.get()
                await loop.sock_sendall(child.socket, _LENGTH.pack(len(payload)) + payload)
        except OSError as exc:
            self._fail(child, exc)

    async def _read(self, child: _Child[C, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._answers_due.wait()
                answer = await asyncio.wait_for(child.answer(loop), self.timeout)
                future = self._waiting.popleft()
                if not self._waiting:
                    self._answers_due.clear()
                if not future.done():  # its caller may have stopped waiting
                    future.set_result(answer)
        except (EOFError, OSError) as exc:  # TimeoutError is an OSError
            self._fail(child, exc)

    def _fail(self, child: _Child[C, Any], exc: BaseException) -> None:
        if self._lost:
            return
        what = "did not answer" if isinstance(exc, TimeoutError) else "died"
        self._lost = (f"the {self.name} process {what} ({type(exc).__name__}, exit code "
                      f"{child.exitcode}) and its state with it")  # fmt: skip
        log.critical("%s", self._lost)
        self.close()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(StateLost(self._lost))
        self.on_lost(self._lost)

    def close(self) -> None:
        for pump in self._pumps:
            if pump is not asyncio.current_task():
                pump.cancel()
        if self._child is not None:
            self._child.stop()
            self._child = None


class StateLost(RuntimeError):
    """The child holding a stage's state died or hung (`StateProcess`)."""


class _Child(Generic[C, R]):
    """One child process and the worker's end of the socket pair to it."""

    def __init__(
        self,
        work: Callable[..., R],
        make_context: Callable[[], C],
        name: str,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self._target = (work, make_context, name)
        self._environment = dict(environment or {})  # what the child's differs in
        self.sent = 0  # bytes of requests since it started
        self._start()

    def _start(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._socket, theirs = socket.socketpair()
        for end in (self._socket, theirs):  # the child's end keeps it when it is passed on
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self._socket.setblocking(False)  # the loop's sock_* calls wait in the selector
        self._process = spawn.Process(
            target=_serve, args=(theirs, *self._target), name=self._target[2], daemon=True
        )
        # A spawned child inherits this process's environment, as it is when it starts.
        saved = {name: os.environ.get(name) for name in self._environment}
        os.environ.update(self._environment)
        try:
            self._process.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        theirs.close()

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    @property
    def socket(self) -> socket.socket:
        return self._socket

    async def answer(self, loop: asyncio.AbstractEventLoop) -> Any:
        """The next answer on the socket."""
        (length,) = _LENGTH.unpack(await _received(loop, self._socket, _LENGTH.size))
        return pickle.loads(await _received(loop, self._socket, length))

    async def call(self, piece: tuple[Any, ...] | None) -> R:
        """Send one piece and wait for its result, on the running loop (None: answered
        None once the child is ready, without the work)."""
        loop = asyncio.get_running_loop()
        payload = pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL)
        self.sent += len(payload)
        await loop.sock_sendall(self._socket, _LENGTH.pack(len(payload)))
        await loop.sock_sendall(self._socket, payload)
        answer: R = await self.answer(loop)
        return answer

    def restart(self) -> None:
        self._process.kill()
        self._process.join(5)
        self._socket.close()
        self.sent = 0
        self._start()

    async def retire(self) -> None:
        """Stop an idle child without holding up the loop: it reads EOF and exits."""
        self._socket.close()
        try:
            for _ in range(40):
                if not self._process.is_alive():
                    return
                await asyncio.sleep(0.05)
        finally:  # also when the agent stops meanwhile
            if self._process.is_alive():
                self._process.kill()
                self._process.join(1)

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


def _serve(
    sock: socket.socket, work: Callable[..., Any], make_context: Callable[[], Any], name: str
) -> None:
    """The child: answer each piece with the work's result until the worker goes away."""
    _die_with_parent(name)
    # Ctrl-C reaches the whole process group: the worker handles it and closes the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As in the worker (streams/cli.py): the allocator came with the environment, and a
    # state's child splits its heap if that asks for it (memory.split_heap).
    tune_collector()
    split_heap()
    _yield_to_the_loop()
    context = make_context()
    received = 0  # bytes of requests since the heap was last trimmed
    try:
        while True:
            if received >= TRIM_AFTER_BYTES and not select.select([sock], [], [], TRIM_IDLE)[0]:
                _rest(context)
                received = 0
            received += _answer(sock, work, context)
    except (EOFError, OSError):  # the worker closed its end, or went
        return


def _answer(sock: socket.socket, work: Callable[..., Any], context: Any) -> int:
    """Read one request and send its answer; returns the request's size. Nothing of either
    outlives the call: a batch's objects are spread through the heap, and a child that held
    the last one while it waited would keep their pages when it rests (measured: an intake
    process kept 63-70 MB after a burst where it needed 40)."""
    length: int = _LENGTH.unpack(_read(sock, _LENGTH.size))[0]
    piece = pickle.loads(_read(sock, length))
    result = None if piece is None else work(*piece, context)  # None: is it ready?
    answer = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(answer)))
    sock.sendall(answer)
    return length


def _rest(context: Any) -> None:
    """A burst of work is over: the context drops what only sped the burst up (its
    `idle()`, if it has one: the pseudonyms' caches), and the free pages go back."""
    idle = getattr(context, "idle", None)
    if callable(idle):
        idle()
    release()


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


def _yield_to_the_loop() -> None:
    """SCHED_BATCH for this process: the same share of the CPU as before, but its wakeup
    does not preempt the task running on a core (Linux's fair scheduler leaves a batch
    task's turn to the tick), so a child woken by a batch takes a free core or waits its
    turn instead of interrupting the worker's loop. Any user may choose it; where the call
    is missing or refused, nothing changes."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused (a seccomp profile)
        return


def _die_with_parent(name: str) -> None:
    """SIGKILL this process when the worker that started it dies, however it dies; and
    name it, for `ps` and `top`."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.prctl(_PR_SET_NAME, name.encode()[:15])
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux/glibc: the pipe's EOF still ends the child on a clean stop
    if os.getppid() != parent:  # the worker died before the signal was set
        os._exit(0)
