"""What the worker's child processes run (streams/offload.py): intake's validation, and the
resolver's state and work. The agents in agents/intake.py and agents/resolve.py hand it over.

It imports nothing heavy (no Faust): a child imports this module to unpickle its work.
Unpickled from the agents' modules, the work cost a child 1.1 s of CPU and 61 MB to start;
from here, with streams/offload.py, 0.2 s and 24 MB. Since intake reads the fetched
records itself (streams/fetched.py, change 26) it imports aiokafka's record reader, and
with it aiokafka: 0.14 s and 6 MB more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from graph.aliases import AliasResolver
from graph.contract import Rejection, parse_report
from graph.identity import Pseudonyms
from graph.privacy import pseudonymise
from graph.records import read_rows, route_rows
from graph.watermark import LowWatermark
from streams import memory
from streams.fetched import Fetched, read_fetched
from streams.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "PACK",
    "PACK_BYTES",
    "Intake",
    "Refused",
    "Resolved",
    "Resolvers",
    "Validated",
    "discard",
    "on_resolvers",
    "packed",
    "validate_batch",
    "validate_fetched",
]

# Records per message on the internal topics, and bytes. Kafka takes a message of at most
# 1 MB (the producer's max_request_size, the broker's message.max.bytes), and a report of
# up to 64 KiB can become a row of about 180 KB once pseudonymised (offender signals the
# linker does not use are kept), so a pack is split by size too. Typical packs are about
# 100 KB and are not split.
PACK = 500
PACK_BYTES = 512 * 1024


def packed(items: list[Any]) -> list[bytes]:
    """What one batch produced, encoded as messages of at most PACK records and PACK_BYTES
    bytes (a record larger than that alone goes alone), in order."""
    messages: list[bytes] = []
    for start in range(0, len(items), PACK):
        messages += _within_bytes(items[start : start + PACK])
    return messages


def _within_bytes(pack: list[Any]) -> list[bytes]:
    data = orjson.dumps(pack)
    if len(data) <= PACK_BYTES or len(pack) == 1:
        return [data]
    # Into pieces of about half the limit, so that most fit at once and the records are
    # encoded about twice in all, not once more for every halving.
    pieces = min(len(pack), 2 * -(-len(data) // PACK_BYTES))
    step = -(-len(pack) // pieces)
    return [message for start in range(0, len(pack), step)
            for message in _within_bytes(pack[start : start + step])]  # fmt: skip


# What a batch becomes: the identity topic's messages (packed rows, encoded, in input
# order) and the rejections as (index in the batch, reason, detail).
Validated = tuple[list[bytes], list[tuple[int, str, str]]]


def validate_batch(
    values: Sequence[bytes | None],
    partitions: Sequence[int],
    offsets: Sequence[int],
    pseudonyms: Pseudonyms,
) -> Validated:
    """Validate and pseudonymise one batch of report messages, with each one's input
    partition and offset. Never raises on bad input."""
    rows: list[list[Any]] = []
    rejected: list[tuple[int, str, str]] = []
    for index, value in enumerate(values):
        report = parse_report(value or b"")
        if isinstance(report, Rejection):
            rejected.append((index, report.reason, report.detail))
            continue
        row = pseudonymise(report, pseudonyms).to_row()
        # Where it came from, for the watermark: its input partition, and its offset there,
        # by which a report sent again after a crash is known (graph/watermark.py).
        row += (partitions[index], offsets[index])
        rows.append(row)
    # Packed: the resolver's one partition sees them in this order.
    return packed(rows), rejected


# A rejected report of a fetch: (input partition, offset, key, original value, reason, detail).
Refused = tuple[int, int, bytes | None, bytes | None, str, str]
# What the fetches of a batch become: the identity topic's messages (as `validate_batch`'s)
# and the rejections.
Intake = tuple[list[bytes], list[Refused]]


def validate_fetched(fetches: Sequence[Fetched], pseudonyms: Pseudonyms) -> Intake:
    """`validate_batch` over the records of some fetches of the reports topic, read here
    (streams/fetched.py): the intake process's work. Never raises on bad input."""
    read = read_fetched(fetches)
    messages, rejected = validate_batch(read.values, read.partitions, read.offsets, pseudonyms)
    return messages, [
        (read.partitions[index], read.offsets[index], read.keys[index], read.values[index],
         reason, detail)
        for index, reason, detail in rejected
    ]  # fmt: skip


@dataclass(slots=True)
class _Resolving:
    """One identity partition's state: which account is whose, and how far the stream has got."""

    generation: int  # which `create` made it (Resolvers below)
    resolver: AliasResolver
    watermark: LowWatermark


class Resolved(NamedTuple):
    """What one identity message became: what the worker sends on, logs and counts."""

    packs: list[tuple[int, bytes]]  # (actor-reports partition, packed records), in order
    hubs: list[tuple[str, str, int]]  # (signal, fingerprint, accounts) of new hubs
    erased: list[str | None]  # the actor of each erasure applied (None: not an offender)
    errors: list[str]  # what could not be read
    accounts: int  # accounts the resolver holds now; -1: not known (nothing was resolved)
    redelivered: int  # reports resolved before, sent again by intake (`route_rows`)


_NOTHING = Resolved([], [], [], [], -1, 0)


class Resolvers:
    """The resolver state of the identity partitions this worker owns (in practice the
    topic's one partition), and the work on it. It lives in the resolver process
    (`LINKWATCH_RESOLVER_PROCESS`, streams/offload.py:StateProcess), or in the worker.

    Each state is made by `create` with a generation number, and every call names the
    generation it means: a call for a state that a rebalance has since replaced does
    nothing, as a call on a dropped object did when the state lived in the worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._states: dict[int, _Resolving] = {}
        # A state left on its way to a fresh process by a worker killed meanwhile (a move
        # takes well under a second): it may name an account erased since.
        for stale in settings.data_dir.glob(f"{STATE_PREFIX}*{STATE_SUFFIX}"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_AFTER:
                    stale.unlink()
        self._trimmer = memory.Trimmer()
        self._frozen_at = time.monotonic()

    def create(self, partition: int, generation: int) -> None:
        settings = self.settings
        resolver = AliasResolver(
            settings.secret_bytes,
            settings.max_accounts_per_signal,
            settings.link_by_text,
            settings.window_seconds,
        )
        watermark = LowWatermark(settings.partitions)
        self._states[partition] = _Resolving(generation, resolver, watermark)

    def apply(
        self, partition: int, generation: int, value: bytes | None, replaying: bool
    ) -> Resolved:
        """One identity message: rows (reports) and objects (erasures, `linkwatch erase`),
        resolved in order into packed records for each actor-reports partition."""
        state = self._states.get(partition)
        if state is None or state.generation != generation:
            return _NOTHING
        # The decoded rows and the encoded packs die with the message: in the resolver
        # process they are made by pymalloc, the state by the C library (memory.transient).
        with memory.transient():
            try:
                rows = read_rows(orjson.loads(value or b""))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                return _NOTHING._replace(errors=["an unreadable batch"])
        # Outside the `try`: an error while resolving is a bug, and the state it leaves is
        # only rebuilt by the restart that follows the resolver process's end.
        routed = route_rows(rows, state.resolver, state.watermark, self.settings.partitions,
                            replaying)  # fmt: skip
        with memory.transient():
            # One message per partition: the records of this batch for that partition, in
            # order.
            messages = [(target, message)
                        for target, entries in sorted(routed.entries.items())
                        for message in packed(entries)]  # fmt: skip
            return Resolved(messages, routed.hubs, routed.erased, routed.errors,
                            state.resolver.accounts, routed.redelivered)  # fmt: skip

    def export(self) -> str | None:
        """The states, for a fresh resolver process to take in (`StateProcess.renew`): the
        name of a file that holds them (None: it could not be written). A file in the data
        dir, readable by the worker's user alone, so that the worker's own heap never holds
        a copy (through the worker, it left the worker larger after expiry: likely as glibc
        raises its mmap threshold for good once it has freed a buffer of tens of MB)."""
        name = None
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            # As `tempfile.mkstemp` makes it, without importing `tempfile` (and `shutil`,
            # `bz2`, `lzma`) into every intake and resolver process.
            path = self.settings.data_dir / f"{STATE_PREFIX}{os.urandom(8).hex()}{STATE_SUFFIX}"
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            name = str(path)
            with os.fdopen(handle, "wb") as file:
                pickle.dump(self._states, file, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as exc:
            log.error("the resolver's state could not be written for a fresh process (%s)",
                      type(exc).__name__)  # fmt: skip
            discard(name)
            return None
        return name

    def restore(self, name: str) -> None:
        """Take in the states an old resolver process exported (`export`): the same tables,
        on a new heap. The file goes at once."""
        with open(name, "rb") as file:
            os.unlink(name)
            self._states = pickle.load(file)

    def forget_some(self, live: list[tuple[int, int]]) -> tuple[bool, int]:
        """A step of retention (`AliasResolver.forget_some`) for the states still owned,
        (partition, generation) in `live`; the others are dropped. Returns (more is due,
        accounts held)."""
        wanted = dict(live)
        for partition, state in list(self._states.items()):
            if wanted.get(partition) != state.generation:
                del self._states[partition]
        behind = False
        for state in self._states.values():
            behind |= state.resolver.forget_some()
        accounts = sum(state.resolver.accounts for state in self._states.values())
        self._keep_memory_down(accounts, behind)
        return behind, accounts

    def _keep_memory_down(self, accounts: int, behind: bool) -> None:
        """What the worker does for its own heap (streams/app.py, agents/graph.py), for this
        one's when it is a process of its own: freeze the survivors now and then, and hand
        pages back as retention frees accounts (`memory.Trimmer`)."""
        now = time.monotonic()
        if now - self._frozen_at >= memory.FREEZE_EVERY:
            memory.freeze()
            self._frozen_at = now
        self._trimmer.held(accounts, behind)


# A resolver state on its way to a fresh process (`Resolvers.export`), in the data dir.
STATE_PREFIX, STATE_SUFFIX = "lw-resolver-state-", ".pickle"
STALE_AFTER = 600.0  # seconds: older, no move is still reading it


def discard(name: str | None) -> None:
    """Remove an exported state that no process took in."""
    if name is not None:
        with contextlib.suppress(OSError):
            os.unlink(name)


def on_resolvers(method: str, *args: Any) -> Any:
    """`Resolvers.method(*args)` on the state passed last: the resolver process's work."""
    *arguments, resolvers = args
    return getattr(resolvers, method)(*arguments)
