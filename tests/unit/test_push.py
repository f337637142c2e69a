"""Cutting a file into messages for `linkwatch push`, and what `linkwatch replay` re-sends."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from streams.journal import IntakeJournal
from streams.push import LineSplitter
from tests.factories import encode, make_report


def split(data: bytes, chunk_size: int, max_line: int = 1000) -> tuple[list[bytes], LineSplitter]:
    splitter = LineSplitter(max_line)
    messages: list[bytes] = []
    for start in range(0, len(data), chunk_size):
        messages += splitter.feed(data[start : start + chunk_size])
    messages += splitter.end()
    return messages, splitter


def line_by_line(data: bytes) -> list[bytes]:
    """What `linkwatch push` sent before it read in chunks: each file line, endings off."""
    messages = [line.rstrip(b"\r\n") for line in io.BytesIO(data)]
    return [message for message in messages if message.strip()]


SAMPLE = b"".join(
    [
        encode(make_report("ravenhart", "ellie", "kent")) + b"\n",
        b"\n",
        encode(make_report("ravenhart", "sam", "devon")) + b"\r\n",
        b"   \t\r\n",
        b"{not json\n",
        b"\xff\xfe\r\r\n",
        b"\r\n",
        encode(make_report("ravenhart", "jess", "norfolk")),  # no newline at the end
    ]
)


def test_every_chunk_size_gives_the_lines_of_the_file() -> None:
    expected = line_by_line(SAMPLE)
    assert len(expected) == 5
    for chunk_size in range(1, len(SAMPLE) + 2):
        messages, splitter = split(SAMPLE, chunk_size)
        assert messages == expected, chunk_size
        assert splitter.blank == 3
        assert splitter.lines == 8
        assert splitter.too_long == []


def test_crlf_split_between_two_chunks_loses_its_cr() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a": 1}\r') == []
    assert splitter.feed(b'\n{"b": 2}\r\n') == [b'{"a": 1}', b'{"b": 2}']
    assert splitter.end() == []


def test_the_last_line_counts_without_a_newline_and_a_final_newline_adds_no_line() -> None:
    assert split(b"one\ntwo", 3)[0] == [b"one", b"two"]
    assert split(b"one\ntwo\n", 3)[0] == [b"one", b"two"]
    assert split(b"one\ntwo\n", 3)[1].lines == 2
    assert split(b"one\n  ", 100)[1].blank == 1
    assert split(b"", 100)[0] == []


def test_inner_whitespace_and_bytes_are_kept_as_they_are() -> None:
    line = b'  {"text": "a\\r\\nb",  "x":\t1}  '
    assert split(line + b"\n", 7)[0] == [line]


def test_a_too_long_line_is_counted_with_its_number_and_the_rest_still_goes() -> None:
    data = b"short\n" + b"x" * 25 + b"\n" + b"y" * 10 + b"\n" + b"z" * 11 + b"\nlast"
    for chunk_size in range(1, len(data) + 1):
        messages, splitter = split(data, chunk_size, max_line=10)
        assert messages == [b"short", b"y" * 10, b"last"], chunk_size
        assert [number for number, _ in splitter.too_long] == [2, 4], chunk_size
        assert splitter.too_long[0][1] >= 11
        assert splitter.lines == 5


def test_a_too_long_last_line_without_newline_is_counted_once() -> None:
    for chunk_size in (1, 4, 100):
        messages, splitter = split(b"ok\n" + b"x" * 30, chunk_size, max_line=10)
        assert messages == [b"ok"]
        assert [number for number, _ in splitter.too_long] == [2]
        assert splitter.lines == 2


def test_a_line_at_the_limit_is_kept_even_with_its_crlf() -> None:
    messages, splitter = split(b"x" * 10 + b"\r\n" + b"y" * 10 + b"\r", 4, max_line=10)
    assert messages == [b"x" * 10, b"y" * 10]
    assert splitter.too_long == []


def test_journal_bodies_come_back_in_accepted_order_and_since_a_time(tmp_path: Path) -> None:
    path = tmp_path / "ns-intake.sqlite3"
    journal = IntakeJournal(path)
    journal.record([("chirp", "b", b'{"id": "b"}'), ("chirp", "a", b'{"id": "a"}')])
    journal.record([("chirp", "c", b'{"id": "c"}'), ("chirp", "a", b'{"again": "a"}')])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE accepted SET accepted_at = 1000 WHERE report_id IN ('a', 'b')")
        db.execute("UPDATE accepted SET accepted_at = 2000 WHERE report_id = 'c'")

    assert list(journal.bodies()) == [b'{"id": "b"}', b'{"id": "a"}', b'{"id": "c"}']
    assert list(journal.bodies(since=2000.0)) == [b'{"id": "c"}']
    assert list(journal.bodies(since=2000.5)) == []
    journal.close()
