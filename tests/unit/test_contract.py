"""The report contract: every kind of bad input is rejected with its reason, never raised."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.contract import (
    MAX_MESSAGE_BYTES,
    REJECTION_REASONS,
    Rejection,
    Report,
    _event_time,
    _parsed_event_time,
    parse_report,
)
from tests.factories import encode, make_report


def rejected(raw: bytes) -> Rejection:
    result = parse_report(raw)
    assert isinstance(result, Rejection), result
    assert result.raw == raw
    assert result.reason in REJECTION_REASONS
    return result


def test_a_valid_report_parses_with_aware_event_time() -> None:
    report = parse_report(encode(make_report("ravenhart", "ellie", "kent", signals={"ip": "x"})))
    assert isinstance(report, Report)
    assert report.offender_key == "chirp:ravenhart"
    assert report.victim_key == "chirp:ellie"
    assert report.reported_at.tzinfo is not None
    assert report.offender_signals == {"ip": "x"}


def test_offsets_and_z_name_the_same_instant() -> None:
    z = parse_report(
        encode(
            make_report(at=__import__("datetime").datetime(2025, 1, 1, 12))
            | {"reported_at": "2025-01-01T12:00:00Z"}
        )
    )
    plus_one = parse_report(encode(make_report() | {"reported_at": "2025-01-01T13:00:00+01:00"}))
    assert isinstance(z, Report) and isinstance(plus_one, Report)
    assert z.event_time == plus_one.event_time


def test_canonical_json_round_trips() -> None:
    report = parse_report(
        encode(
            make_report(
                text="Can I tell you a secret?", reporter="victim", signals={"email_hash": "e1"}
            )
        )
    )
    assert isinstance(report, Report)
    assert parse_report(report.to_json()) == report


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "not_utf8"),
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_bytes_that_are_not_a_report_object(raw: bytes, reason: str) -> None:
    assert rejected(raw).reason == reason


def _without(path: str) -> dict[str, object]:
    report = make_report()
    *parents, leaf = path.split(".")
    target = report
    for parent in parents:
        target = target[parent]
    del target[leaf]
    return report


@pytest.mark.parametrize(
    "path",
    [
        "report_id",
        "platform",
        "reported_at",
        "category",
        "offender",
        "offender.account",
        "victim",
        "victim.account",
        "victim.region",
    ],
)
def test_each_missing_required_field(path: str) -> None:
    rejection = rejected(encode(_without(path)))
    assert rejection.reason == "missing_field"
    assert path in rejection.detail


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"report_id": 17}, "wrong_type", "report_id"),
        ({"report_id": ""}, "bad_value", "report_id"),
        ({"report_id": "r" * 129}, "bad_value", "report_id"),
        ({"platform": "Chirp"}, "bad_value", "platform"),
        ({"platform": "chirp app"}, "bad_value", "platform"),
        ({"platform": "p" * 65}, "bad_value", "platform"),
        ({"platform": None}, "wrong_type", "platform"),
        ({"category": "spam"}, "unknown_category", "category"),
        ({"category": ["harassment"]}, "wrong_type", "category"),
        ({"reported_at": "yesterday"}, "bad_timestamp", "reported_at"),
        ({"reported_at": "2025-03-01T12:00:00"}, "bad_timestamp", "reported_at"),
        ({"reported_at": "2025-03-01"}, "bad_timestamp", "reported_at"),
        ({"reported_at": "2025-02-30T12:00:00Z"}, "bad_timestamp", "reported_at"),
        ({"reported_at": 1740830400}, "wrong_type", "reported_at"),
        ({"offender": "someone"}, "wrong_type", "offender"),
        ({"offender": {"account": 5}}, "wrong_type", "offender.account"),
        ({"offender": {"account": "a" * 257}}, "bad_value", "offender.account"),
        ({"offender": {"account": "a", "signals": ["x"]}}, "wrong_type", "offender.signals"),
        ({"offender": {"account": "a", "signals": {"ip": 1}}}, "wrong_type", "offender.signals.ip"),
        ({"victim": {"account": "v", "region": ""}}, "bad_value", "victim.region"),
        ({"victim": {"account": "v", "region": "r" * 65}}, "bad_value", "victim.region"),
        ({"victim": {"account": "", "region": "kent"}}, "bad_value", "victim.account"),
        ({"text": "t" * 4097}, "bad_value", "text"),
        ({"text": 3}, "wrong_type", "text"),
        ({"reporter": {"name": "x"}}, "wrong_type", "reporter"),
    ],
)
def test_each_wrong_value(overrides: dict[str, object], reason: str, field: str) -> None:
    rejection = rejected(encode(make_report() | overrides))
    assert rejection.reason == reason
    assert rejection.detail.startswith(field)


def test_optional_fields_may_be_null_and_unknown_fields_are_ignored() -> None:
    report = parse_report(encode(make_report(text=None, reporter=None, extra_field={"a": 1})))
    assert isinstance(report, Report)
    assert report.text is None


def test_partition_key_keeps_one_accounts_reports_together() -> None:
    from graph.contract import partition_key

    assert partition_key(encode(make_report("tom"))) == b"chirp:tom"
    assert partition_key(b"{broken") is None
    assert partition_key(b'{"platform": "chirp", "offender": "tom"}') is None
    assert partition_key(b"[1]") is None


# The usual timestamp shapes are read in integer arithmetic (change 25): the same
# instant for each, and the same refusals, as the contract's regex-and-`datetime` path,
# which every other shape still takes (and which read these too before change 25).
_by_datetime = _parsed_event_time


def _digits(size: int, others: str = "") -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from("0123456789" * 3 + others), min_size=size, max_size=size).map(
        "".join
    )


_ZONES = st.one_of(
    st.just("Z"),
    st.tuples(st.sampled_from("+-"), _digits(2, "a\u0663"), _digits(2, "x")).map(
        lambda zone: f"{zone[0]}{zone[1]}:{zone[2]}"
    ),
)
_FRACTIONS = st.one_of(
    st.just(""), st.integers(0, 11).flatmap(lambda size: _digits(size, "x")).map(lambda d: f".{d}")
)
_ANY_DIGITS = st.tuples(
    _digits(4, "x"),
    _digits(2),
    _digits(2, " "),
    _digits(2),
    _digits(2),
    _digits(2, "\uff19"),
    _FRACTIONS,
    _ZONES,
).map(lambda p: f"{p[0]}-{p[1]}-{p[2]}T{p[3]}:{p[4]}:{p[5]}{p[6]}{p[7]}")
_REAL_DATES = st.tuples(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    _FRACTIONS,
    _ZONES,
).map(
    lambda p: (
        f"{p[0].year:04d}-{p[0].month:02d}-{p[0].day:02d}T"
        f"{p[0].hour:02d}:{p[0].minute:02d}:{p[0].second:02d}{p[1]}{p[2]}"
    )
)


@given(st.one_of(_ANY_DIGITS, _REAL_DATES))
@settings(max_examples=3000, deadline=None)
def test_the_usual_timestamp_shapes_read_as_fromisoformat_reads_them(text: str) -> None:
    assert _event_time(text) == _by_datetime(text), text


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-29T00:00:00Z",  # leap year
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",  # not a leap year
        "2000-02-29T23:59:59Z",  # a leap year
        "2025-04-31T00:00:00Z",
        "2025-12-31T23:59:59Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T00:00:60Z",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:59",
        "2025-01-01T00:00:00+05:75",  # fromisoformat takes two-digit minutes as they are
        "2025-01-01T00:00:00+23:59",
        "2025-01-01T00:00:00+24:00",
        "2025-01-01T00:00:00-00:00",
        "2025-01-01T21:38:23.324632Z",  # as the simulator writes them
        "2025-01-01T21:38:23.1+01:00",
        "2025-01-01T21:38:23.123456789Z",  # fromisoformat keeps six digits
        "2025-01-01T21:38:23.1234567890Z",  # ten: refused
        "2025-01-01T21:38:23.Z",
        "1969-12-31T23:59:59.5Z",
        "9999-12-31T23:59:59.999999-23:59",  # beyond a float's exact microseconds
        "0001-01-01T00:00:00.000001+23:59",
        "2025-01-01t21:38:23Z",
        "2025-01-01 21:38:23z",
        "\uff12025-01-01T00:00:00Z",  # a fullwidth digit
    ],
)
def test_edge_timestamps_read_as_fromisoformat_reads_them(text: str) -> None:
    assert _event_time(text) == _by_datetime(text)
