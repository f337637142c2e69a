"""The reports topic read raw (streams/fetched.py): a fetch is handed on whole, and the intake
process reads from it exactly the records aiokafka itself would have given."""

from __future__ import annotations

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams import fetched
from streams.fetched import RawFetch, RawTopics, read_fetched
from tests.factories import fetch

TOPIC = "linkwatch.reports"
READ_UNCOMMITTED, READ_COMMITTED = 0, 1


def _two_batches() -> bytes:
    """What a fetch from offset 12 may bring: a batch begun before it (10-14), then 15-17."""
    values = [f"report {offset}".encode() for offset in range(10, 18)]
    keys = [f"key {offset}".encode() for offset in range(10, 18)]
    first = fetch(3, 10, values[:5], keys=keys[:5])
    second = fetch(3, 15, values[5:], keys=keys[5:])
    return first.data + second.data


def _records(
    data: bytes, fetch_offset: int, deserializer: object, isolation: int = READ_UNCOMMITTED
) -> tuple[list[object], int]:
    """What the worker's consumer hands on for one fetch, and where it fetches from next."""
    records = fetched._PartitionRecords(
        TopicPartition(TOPIC, 3), fetched._KeptBytes(data), [], fetch_offset, None,
        deserializer, True, isolation,
    )  # fmt: skip
    return list(records), records.next_fetch_offset


def _aiokafka(data: bytes, fetch_offset: int) -> tuple[list[ConsumerRecord], int]:
    """What aiokafka itself gives for the same bytes."""
    records = PartitionRecords(
        TopicPartition(TOPIC, 3), MemoryRecords(data), [], fetch_offset, None, None, True,
        READ_UNCOMMITTED,
    )  # fmt: skip
    return list(records), records.next_fetch_offset


def test_a_fetch_of_a_topic_read_raw_is_one_record_that_holds_what_aiokafka_reads() -> None:
    data = _two_batches()
    (raw,), position = _records(data, 12, RawTopics({TOPIC}))
    expected, expected_position = _aiokafka(data, 12)
    assert isinstance(raw, RawFetch)
    assert position == expected_position == 18
    assert (raw.topic, raw.partition, raw.offset) == (TOPIC, 3, 17)  # Faust commits past it
    read = read_fetched([raw.fetched()])
    assert read.values == [record.value for record in expected]
    assert read.offsets == [record.offset for record in expected] == [12, 13, 14, 15, 16, 17]
    assert read.keys == [record.key for record in expected]
    assert read.partitions == [3] * 6


def test_other_topics_and_other_consumers_read_records_as_before() -> None:
    data = _two_batches()
    expected, position = _aiokafka(data, 12)
    # The worker's consumer, another topic: records, values undeserialized.
    records, other_position = _records(data, 12, RawTopics({"linkwatch.identity"}))
    assert records == expected and other_position == position
    # Any other consumer in the process (no RawTopics): as aiokafka reads.
    records, other_position = _records(data, 12, None)
    assert records == expected and other_position == position
    # In a transaction's isolation the raw path (which keeps aborted records) is not used.
    records, _ = _records(data, 12, RawTopics({TOPIC}), READ_COMMITTED)
    assert records == expected


def test_a_corrupt_batch_is_refused_in_the_worker_as_aiokafka_refuses_it() -> None:
    data = bytearray(_two_batches())
    data[-3] ^= 0xFF  # inside the second batch's records: its CRC no longer matches
    with pytest.raises(CorruptRecordException):
        _records(bytes(data), 12, RawTopics({TOPIC}))
    with pytest.raises(CorruptRecordException):
        _aiokafka(bytes(data), 12)
