"""Sending report lines to the reports topic: whole record batches, no per-line parsing.

`linkwatch push` replays files of millions of lines into a pipeline that shares the
machine, so the cost per line matters more than anything else here. The file is read in
large chunks and cut into lines by `bytes.split`; lines are not parsed (the worker's intake
validates every message and repartitions by actor itself) and carry no key. They go into
aiokafka record batches, each batch to the next partition in turn, so a small file stays in
one partition, in file order, and a large one is spread evenly in runs of one batch. Every
batch is acknowledged by all in-sync replicas (`acks=all`); a line is counted as sent only
when its batch is acknowledged. After the first batch the broker did not take, nothing more
is sent: the rest is counted as failed, and pushing the same file again is the recovery
(the pipeline drops a (platform, report_id) it has seen, and alert ids are deterministic).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.settings import Settings

__all__ = ["MAX_LINE_BYTES", "LineSplitter", "PushResult", "push_file", "push_messages"]

# A Kafka broker takes a record batch of at most message.max.bytes (1 MiB + 12 by default),
# and a batch holding one line adds 61 bytes of batch header and about 11 of record header.
MAX_LINE_BYTES = 1024 * 1024 - 128
READ_BYTES = 1024 * 1024
# Measured on the embedded broker with 4 partitions (1M lines): 128 KiB batches cost the
# least CPU per line (2.1 us); 64 KiB and 1 MiB ones 10-20% more, for no higher rate.
BATCH_BYTES = 128 * 1024
# With --rate, batches hold about this much time's worth of lines, so pacing stays smooth.
RATE_SLICE_SECONDS = 0.02

Progress = Callable[[int, int], None]
"""Called with the bytes and the lines read so far, after each chunk of the file."""


@dataclass(frozen=True, slots=True)
class PushResult:
    sent: int  # acknowledged by the broker
    blank: int  # blank lines, skipped
    failed: int  # not delivered: too long, refused by the broker, or not sent after that
    seconds: float
    errors: tuple[str, ...] = ()  # one sentence per kind of failure, for the user


class LineSplitter:
    """Cuts a byte stream, fed in chunks of any size, into messages: lines without their
    endings (LF or CRLF). Blank lines are counted and dropped, and so are lines longer than
    `max_line` bytes, whose content is never held in memory whole."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self.lines = 0  # complete lines seen, blank and too long ones included
        self.blank = 0
        self.too_long: list[tuple[int, int]] = []  # (line number, bytes at least)
        self._carry = b""
        self._skipping = False  # inside a too-long line, dropping bytes until its end

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages whose line ends in this chunk, in order."""
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                self.too_long[-1] = (self.too_long[-1][0], self.too_long[-1][1] + len(chunk))
                return []
            self.too_long[-1] = (self.too_long[-1][0], self.too_long[-1][1] + end)
            self._skipping = False
            self.lines += 1
            chunk = chunk[end + 1 :]
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the start of a line that ends in a later chunk, or b""
        if not lines:
            self._carry += tail
            self._check_carry()
            return []
        if self._carry:
            lines[0] = self._carry + lines[0]
        self._carry = tail
        first = self.lines + 1
        self.lines += len(lines)
        if b"\r" in chunk:
            lines = [line.rstrip(b"\r") for line in lines]
        else:
            lines[0] = lines[0].rstrip(b"\r")  # its CR may have been in the carry
        kept = self._kept(lines, first)
        self._check_carry()
        return kept

    def end(self) -> list[bytes]:
        """The last line, when the stream does not end with a line ending."""
        carry, self._carry = self._carry, b""
        if self._skipping:
            self._skipping = False
            self.lines += 1
            return []
        if not carry:
            return []
        self.lines += 1
        return self._kept([carry.rstrip(b"\r")], self.lines)

    def _kept(self, lines: list[bytes], first: int) -> list[bytes]:
        # Both passes loop in C: per line, this costs tens of nanoseconds.
        kept = list(filter(bytes.strip, lines))
        self.blank += len(lines) - len(kept)
        if kept and max(map(len, kept)) > self.max_line:
            for number, line in enumerate(lines, first):
                if len(line) > self.max_line:
                    self.too_long.append((number, len(line)))
            kept = [line for line in kept if len(line) <= self.max_line]
        return kept

    def _check_carry(self) -> None:
        if len(self._carry) > self.max_line and len(self._carry.rstrip(b"\r")) > self.max_line:
            self.too_long.append((self.lines + 1, len(self._carry)))
            self._carry = b""
            self._skipping = True


def read_chunks(path: Path, size: int = READ_BYTES) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(size):
            yield chunk


def push_file(
    settings: Settings,
    path: Path,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Send each non-blank line of a JSONL file to the reports topic, as it is."""
    splitter = LineSplitter()

    def messages() -> Iterator[list[bytes]]:
        done = 0
        for chunk in read_chunks(path):
            kept = splitter.feed(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, splitter.lines)
            yield kept
        yield splitter.end()

    started = time.monotonic()
    outcome = asyncio.run(_send(settings, messages(), rate))
    errors = list(outcome.errors)
    if splitter.too_long:
        number, size = splitter.too_long[0]
        others = len(splitter.too_long) - 1
        errors.insert(
            0,
            f"line {number} is {size:,} bytes, over the {MAX_LINE_BYTES:,} a Kafka message "
            f"holds; it was not sent" + (f" (nor {others} more like it)" if others else ""),
        )
    return PushResult(
        sent=outcome.sent,
        blank=splitter.blank,
        failed=outcome.failed + len(splitter.too_long),
        seconds=time.monotonic() - started,
        errors=tuple(errors),
    )


def push_messages(
    settings: Settings, messages: Iterable[bytes], *, rate: float | None = None
) -> PushResult:
    """Send these messages to the reports topic, as they are (used by `linkwatch replay`)."""
    too_long = 0

    def slices() -> Iterator[list[bytes]]:
        nonlocal too_long
        group: list[bytes] = []
        for message in messages:
            if len(message) > MAX_LINE_BYTES:
                too_long += 1
                continue
            group.append(message)
            if len(group) == 1000:
                yield group
                group = []
        yield group

    started = time.monotonic()
    outcome = asyncio.run(_send(settings, slices(), rate))
    errors = outcome.errors
    if too_long:
        errors = (f"{too_long} were over the {MAX_LINE_BYTES:,} bytes a Kafka message holds",)
        errors += outcome.errors
    return PushResult(
        sent=outcome.sent,
        blank=0,
        failed=outcome.failed + too_long,
        seconds=time.monotonic() - started,
        errors=errors,
    )


@dataclass(slots=True)
class _Outcome:
    sent: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    first_failure: BaseException | None = None
    pending: set[asyncio.Future[Any]] = field(default_factory=set)

    def settle(self, lines: int, delivery: asyncio.Future[Any]) -> None:
        self.pending.discard(delivery)
        failure = delivery.exception() if not delivery.cancelled() else asyncio.CancelledError()
        if failure is None:
            self.sent += lines
            return
        self.failed += lines
        if self.first_failure is None:
            self.first_failure = failure
            self.errors = (f"the broker did not take a batch: {_describe(failure)}",)


async def _send(settings: Settings, groups: Iterable[list[bytes]], rate: float | None) -> _Outcome:
    topic = settings.reports_topic
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        max_batch_size=BATCH_BYTES,
        linger_ms=0,
        # Each batch is checked against MAX_LINE_BYTES instead; this only caps send().
        max_request_size=2 * 1024 * 1024,
    )
    outcome = _Outcome()
    try:
        await producer.start()
        partitions = sorted(await _partitions(producer, topic))
        turn = random.randrange(len(partitions))  # small pushes spread over the partitions
        per_batch = max(1, int(rate * RATE_SLICE_SECONDS)) if rate else None
        started, submitted = time.monotonic(), 0
        async for batch, lines in _batches(producer, groups, per_batch):
            if outcome.first_failure is not None:
                outcome.failed += lines  # not sent: see the module docstring
                continue
            if rate:
                # The lines of this batch are due once all those before it have had their time.
                delay = started + submitted / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            submitted += lines
            partition = partitions[turn % len(partitions)]
            turn += 1
            try:
                delivery = await producer.send_batch(batch, topic, partition=partition)
            except KafkaError as error:
                outcome.failed += lines
                if outcome.first_failure is None:
                    outcome.first_failure = error
                    outcome.errors = (f"could not queue a batch: {_describe(error)}",)
                continue
            outcome.pending.add(delivery)
            delivery.add_done_callback(lambda done, n=lines: outcome.settle(n, done))
            await asyncio.sleep(0)  # lets the sender start this request while we build more
        while outcome.pending:
            await asyncio.wait(set(outcome.pending))
    finally:
        await producer.stop()
    return outcome


async def _batches(
    producer: Any, groups: Iterable[list[bytes]], per_batch: int | None
) -> AsyncIterator[tuple[Any, int]]:
    """Full record batches and how many lines each holds."""
    batch, count = producer.create_batch(), 0
    add = batch.append
    for group in groups:
        stamp = int(time.time() * 1000)
        for message in group:
            if count == per_batch or add(timestamp=stamp, key=None, value=message) is None:
                yield batch, count
                batch, count = producer.create_batch(), 0
                add = batch.append
                add(timestamp=stamp, key=None, value=message)
            count += 1
    if count:
        yield batch, count


async def _partitions(producer: Any, topic: str) -> set[int]:
    try:
        return set(await producer.partitions_for(topic))
    except KafkaError:
        raise LookupError(f"topic {topic} does not exist: run `linkwatch topics`") from None


def _describe(error: BaseException) -> str:
    name, text = type(error).__name__, str(error)
    return f"{name}: {text}" if text and text != name else name
