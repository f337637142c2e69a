"""The reports topic's fetched bytes, handed on whole: its records are read in the intake
process, not turned into one aiokafka object per report in the worker.

aiokafka reads every fetched record into a `ConsumerRecord` (an interpreted dataclass
`__init__`, the key, value and headers copied out) in the worker's consumer thread, and
intake then took each record's value, partition and offset into lists and pickled them
to its process: about a tenth of the worker's time under a backlog, for values the worker
never looks at (README "Performance", change 26). For a topic read raw, a partition's fetch
becomes one `RawFetch` instead: the bytes Kafka sent, with the offset the fetch asked for.
The worker reads only the batch headers (to check each batch's CRC and move the position
on); the intake process reads the records (`read_fetched`).

What changes nowhere else: positions, commits and rebalances are aiokafka's and Faust's,
and a `RawFetch` is one record of the fetched batch (streams/transport.py) with the
offset of the fetch's last record and the newest timestamp of its last batch. Only the
worker's own consumer reads raw: its value deserializer is a `RawTopics`, which names the
topics (every other consumer in the process reads records as before), and only with
`read_uncommitted`: Faust asks for `read_committed` only for exactly-once processing, which
linkwatch never sets (streams/app.py), and there aborted records must be left out record
by record, which aiokafka's own reading does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords

__all__ = ["Fetched", "RawFetch", "RawTopics", "read_fetched", "read_raw"]

# What the intake process is sent of a fetch: (partition, first offset to take, bytes).
Fetched = tuple[int, int, bytes]

_READ_UNCOMMITTED = 0  # aiokafka's isolation level code


class RawTopics:
    """The value deserializer of a consumer that reads these topics raw. Records of other
    topics are read with no deserializer, as before; it is never called on a value."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)

    def __call__(self, value: bytes | None) -> bytes | None:
        return value


@dataclass(slots=True)
class RawFetch:
    """One partition's fetch of a topic read raw, as one record of the fetched batch."""

    topic: str
    partition: int
    offset: int  # of the fetch's last record
    timestamp: int | None  # ms: the newest in the fetch's last batch
    timestamp_type: int
    first: int  # the offset fetched from: the bytes may start before it
    data: bytes

    @property
    def serialized_value_size(self) -> int:
        return len(self.data)

    def fetched(self) -> Fetched:
        return self.partition, self.first, self.data


class _KeptBytes:
    """aiokafka's MemoryRecords over a fetch's bytes, which it keeps for `RawFetch`."""

    __slots__ = ("_records", "data")

    def __init__(self, data: Any) -> None:
        self.data = data
        self._records = MemoryRecords(data)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


class _PartitionRecords(aiokafka_fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's records of one partition's fetch; for a topic read raw, one `RawFetch`."""

    def __init__(
        self,
        tp: Any,
        records: Any,
        aborted_transactions: Any,
        fetch_offset: int,
        key_deserializer: Any,
        value_deserializer: Any,
        check_crcs: bool,
        isolation_level: int,
    ) -> None:
        raw = isinstance(value_deserializer, RawTopics)
        if raw:
            raw = tp.topic in value_deserializer.topics and isolation_level == _READ_UNCOMMITTED
            value_deserializer = None
        super().__init__(tp, records, aborted_transactions, fetch_offset, key_deserializer,
                         value_deserializer, check_crcs, isolation_level)  # fmt: skip
        if raw:
            self._records_iterator = self._whole(fetch_offset)

    def _whole(self, first: int) -> Iterator[RawFetch]:
        records = self._records
        position: int = first
        last = None  # the last batch with records to take
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {self._tp}")
            if not batch.is_control_batch and batch.next_offset > position:
                last = batch
            position = max(position, batch.next_offset)
            self.next_fetch_offset = position  # as aiokafka's own moves on after a batch
        if last is not None:
            tp = self._tp
            yield RawFetch(tp.topic, tp.partition, position - 1,
                           getattr(last, "max_timestamp", None), last.timestamp_type, first,
                           bytes(records.data))  # fmt: skip


def read_raw() -> None:
    """Let consumers in this process read topics raw (their value deserializer a
    `RawTopics`); every other consumer reads as before."""
    aiokafka_fetcher.MemoryRecords = _KeptBytes
    aiokafka_fetcher.PartitionRecords = _PartitionRecords


@dataclass(slots=True)
class Read:
    """The records of some fetches, in order: values, input partitions, offsets and keys."""

    values: list[bytes | None]
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]


def read_fetched(fetches: Iterable[Fetched]) -> Read:
    """Every record of `fetches` from its first offset on, control batches left out, in
    order (the intake process's side of `RawFetch`)."""
    read = Read([], [], [], [])
    for partition, first, data in fetches:
        records = MemoryRecords(data)
        while records.has_next():
            batch = records.next_batch()
            if batch.is_control_batch:
                continue
            for record in batch:
                if record.offset < first:
                    continue  # a batch begun before the fetch's offset comes whole
                read.values.append(record.value)
                read.partitions.append(partition)
                read.offsets.append(record.offset)
                read.keys.append(record.key)
    return read
