# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""The report contract: how one message from a platform becomes a Report or a Rejection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = [
    "CATEGORIES",
    "MAX_MESSAGE_BYTES",
    "PLATFORM_PATTERN",
    "REJECTION_REASONS",
    "SIGNAL_KEYS",
    "Rejection",
    "Report",
    "parse_report",
    "partition_key",
    "report_from_document",
]

MAX_MESSAGE_BYTES = 64 * 1024
MAX_TEXT_CHARS = 4096
CATEGORIES = frozenset(
    {"impersonation", "harassment", "threat", "sexual_content", "doxxing", "other"}
)
# Signals the alias linker understands; other string-valued keys are kept but not used.
SIGNAL_KEYS = ("email_hash", "phone_hash", "device_id", "ip")
# The signals of a row that has none (every row the graph is sent): one shared empty
# mapping, read-only by its type, rather than a new dict per report.
_NO_SIGNALS: Final[Mapping[str, str]] = {}

# Every reason a message can be rejected for. The set is closed so that the rejection
# counter has a bounded label set; the human-readable detail travels beside it.
REJECTION_REASONS = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "bad_timestamp",
    "unknown_category",
)

PLATFORM_PATTERN = _PLATFORM = re.compile(r"[a-z0-9_.-]{1,64}")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


@dataclass(slots=True, init=False)
class Report:
    """A valid abuse report: one offender account, one victim, one moment in event time.

    Treat it as immutable. (It is not `frozen` because a frozen dataclass sets each field
    through `object.__setattr__`, which made building reports 8% of the worker's time.)
    `event_time` is `reported_at` as seconds since the epoch: the window is measured in it,
    and internal topics carry it as a number, so no stage parses a timestamp twice.
    """

    report_id: str
    platform: str
    event_time: float
    category: str
    offender_account: str
    victim_account: str
    victim_region: str
    offender_signals: Mapping[str, str]
    text: str | None
    reporter: str | None

    # Written out (`init=False`) because mypyc compiles a written `__init__`, where the
    # one `dataclass` generates runs interpreted: 0.5-0.9 against 0.14 us a report
    # ("Performance", change 23). The fields and their order are the dataclass's.
    def __init__(
        self,
        report_id: str,
        platform: str,
        event_time: float,
        category: str,
        offender_account: str,
        victim_account: str,
        victim_region: str,
        offender_signals: Mapping[str, str],
        text: str | None = None,
        reporter: str | None = None,
    ) -> None:
        self.report_id = report_id
        self.platform = platform
        self.event_time = event_time
        self.category = category
        self.offender_account = offender_account
        self.victim_account = victim_account
        self.victim_region = victim_region
        self.offender_signals = offender_signals
        self.text = text
        self.reporter = reporter

    @property
    def reported_at(self) -> datetime:
        return datetime.fromtimestamp(self.event_time, UTC)

    @property
    def offender_key(self) -> str:
        """The offender account as `platform:account`, unique across platforms."""
        return f"{self.platform}:{self.offender_account}"

    @property
    def victim_key(self) -> str:
        return f"{self.platform}:{self.victim_account}"

    def to_json(self) -> bytes:
        """Canonical JSON in the contract's own shape (parse_report reads it back)."""
        return orjson.dumps(self.to_document())

    def to_row(self) -> list[Any]:
        """The report as internal topics carry it: a positional list (see `from_row`).

        A list of fields encodes and decodes several times faster than the contract's
        nested objects, and it holds `event_time` as a number."""
        return [self.report_id, self.platform, self.event_time, self.category,
                self.offender_account, self.victim_account, self.victim_region,
                dict(self.offender_signals) or None, self.text, self.reporter]  # fmt: skip

    @classmethod
    def from_row(cls, row: list[Any]) -> Report:
        """Read back `to_row`, without validating again: only for linkwatch's own internal
        topics, where everything was validated once at intake. Extra trailing items (an
        envelope's) are ignored; a row that is too short or mistyped raises ValueError."""
        try:
            report_id, platform, moment, category, account, victim, region, signals, text, \
                reporter = row[:10]  # fmt: skip
            return cls(report_id, platform, float(moment), category, account, victim, region,
                       signals or _NO_SIGNALS, text, reporter)  # fmt: skip
        except (TypeError, ValueError):
            raise ValueError("not a report row") from None

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "report_id": self.report_id,
            "platform": self.platform,
            "reported_at": self.reported_at.isoformat(),
            "category": self.category,
            "offender": {"account": self.offender_account},
            "victim": {"account": self.victim_account, "region": self.victim_region},
        }
        if self.offender_signals:
            document["offender"]["signals"] = dict(self.offender_signals)
        if self.text is not None:
            document["text"] = self.text
        if self.reporter is not None:
            document["reporter"] = self.reporter
        return document


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is not a report, with the original bytes kept for the dead-letter topic."""

    reason: str
    detail: str
    raw: bytes


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_report(raw: bytes) -> Report | Rejection:
    """Validate one message against the contract. Never raises: bad input is a value."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection(
            "too_large", f"message is {len(raw)} bytes, the limit is {MAX_MESSAGE_BYTES}", raw
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("not_utf8", "message is not valid UTF-8", raw)
        return Rejection("not_json", f"message is not JSON: {exc}", raw)
    if not isinstance(document, dict):
        return Rejection(
            "not_object", f"message is a JSON {type(document).__name__}, not an object", raw
        )
    return _well_formed(document) or report_from_document(document, raw)


def report_from_document(document: dict[str, Any], raw: bytes = b"") -> Report | Rejection:
    """Validate an already-decoded report object (internal topics carry it inside envelopes)."""
    try:
        return _report_from(document)
    except _Invalid as invalid:
        return Rejection(invalid.reason, invalid.detail, raw)


def partition_key(raw: bytes) -> bytes | None:
    """`platform:offender.account` when the message has them, else None (any partition).

    Producers that key by this keep one account's reports in order; linkwatch does not
    depend on it, but alerts then show reports in the order they were filed.
    """
    try:
        document = orjson.loads(raw)
        return f"{document['platform']}:{document['offender']['account']}".encode()
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


def _report_from(document: dict[str, Any]) -> Report:
    return _well_formed(document) or _checked(document)


def _well_formed(document: dict[str, Any]) -> Report | None:
    """The same rules as `_checked`, inline, for the common case of a valid report; None
    sends anything doubtful to `_checked`, which says exactly what is wrong."""
    get = document.get
    offender, victim = get("offender"), get("victim")
    if type(offender) is not dict or type(victim) is not dict:
        return None
    report_id, platform, category = get("report_id"), get("platform"), get("category")
    reported_at = get("reported_at")
    account, victim_account, region = (
        offender.get("account"),
        victim.get("account"),
        victim.get("region"),
    )
    signals, text, reporter = offender.get("signals"), get("text"), get("reporter")
    if not (
        type(report_id) is str and 0 < len(report_id) <= 128
        and type(platform) is str and _platform_ok(platform)
        and type(category) is str and category in CATEGORIES
        and type(reported_at) is str
        and type(account) is str and 0 < len(account) <= 256
        and type(victim_account) is str and 0 < len(victim_account) <= 256
        and type(region) is str and 0 < len(region) <= 64
        and (text is None or (type(text) is str and len(text) <= MAX_TEXT_CHARS))
        and (reporter is None or (type(reporter) is str and len(reporter) <= 256))
        and (signals is None or (type(signals) is dict and all(
            type(value) is str and 0 < len(value) <= 256 for value in signals.values())))
    ):  # fmt: skip
        return None
    moment = _event_time(reported_at)
    if moment is None:
        return None
    return Report(report_id, platform, moment, category, account, victim_account, region,
                  signals or {}, text, reporter)  # fmt: skip


# Platforms are few: each distinct one is matched against _PLATFORM once (up to a bound, so
# a stream of made-up platform names cannot grow the cache without limit).
_platforms: dict[str, bool] = {}


def _platform_ok(platform: str) -> bool:
    known = _platforms.get(platform)
    if known is None:
        known = _PLATFORM.fullmatch(platform) is not None
        if len(_platforms) < 4096:
            _platforms[platform] = known
    return known


def _event_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp with an offset or Z; None if it is
    not one. The usual shape (`YYYY-MM-DDTHH:MM:SS`, a fraction or not, then `Z` or
    `+HH:MM`) skips the regex and `datetime`: `_shaped_event_time` reads the digits."""
    zone = _zone_at(text)
    if zone:
        return _shaped_event_time(text, zone)
    return _parsed_event_time(text)


def _parsed_event_time(text: str) -> float | None:
    try:
        if len(text) > 64 or not _RFC3339.fullmatch(text):
            return None
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _zone_at(text: str) -> int:
    """Where the zone (`Z`, `+HH:MM`, `-HH:MM`) of a timestamp of the usual shape starts:
    `YYYY-MM-DDTHH:MM:SS`, then `.` and 1-9 digits or nothing, then the zone, with every
    separator in place. 0 if it is not of that shape (digits are checked later)."""
    size = len(text)
    if size < 20 or size > 35:
        return 0
    if text[4] != "-" or text[7] != "-" or text[10] != "T" or text[13] != ":" or text[16] != ":":
        return 0
    zone = 19
    if text[19] == ".":
        zone = 20
        while zone < size and zone < 30 and 48 <= ord(text[zone]) <= 57:  # ASCII digits
            zone += 1
        if zone == 20 or zone == 30:
            return 0  # no digits, or more than nine: the regex's to refuse
    if size - zone == 1 and text[zone] == "Z":
        return zone
    if size - zone == 6 and (text[zone] == "+" or text[zone] == "-") and text[zone + 3] == ":":
        return zone
    return 0


# Microseconds below this are a float exactly, so dividing them by a million rounds as
# `timedelta.total_seconds` does (years 1685 to 2255).
_EXACT: Final = 9_007_199_254_740_992.0  # 2**53


def _shaped_event_time(text: str, zone: int) -> float | None:
    """`datetime.fromisoformat(text).timestamp()` for a timestamp of the usual shape
    (`_zone_at`), with the same answers and the same refusals (None), in integer
    arithmetic: `_RFC3339`, `fromisoformat` and `timestamp` were about a tenth of
    validating a report ("Performance", change 25; `tests/unit/test_contract.py`
    compares the two)."""
    # One at a time: a tuple assignment would box each number into a tuple and back.
    year = _number(text, 0, 4)
    month = _number(text, 5, 7)
    day = _number(text, 8, 10)
    hour = _number(text, 11, 13)
    minute = _number(text, 14, 16)
    second = _number(text, 17, 19)
    if year < 1 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23:
        return None  # also a non-digit anywhere (-1)
    if minute < 0 or minute > 59 or second < 0 or second > 59:
        return None
    # (No lookup tables: compiled, a constant tuple is built again at each use.)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2:
        longest = 29 if leap else 28
    else:
        longest = 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31
    if day > longest:
        return None
    micro = 0
    if zone > 20:  # `fromisoformat` reads six digits of a fraction and drops the rest
        digits = zone - 20 if zone < 26 else 6
        micro = _number(text, 20, 20 + digits)
        for _ in range(6 - digits):
            micro *= 10
    offset = 0
    if text[zone] != "Z":
        hours = _number(text, zone + 1, zone + 3)
        minutes = _number(text, zone + 4, zone + 6)
        if hours < 0 or minutes < 0:
            return None
        offset = hours * 3600 + minutes * 60  # `fromisoformat` takes any two-digit minutes
        if offset >= 86400:
            return None  # `timezone` wants strictly less than a day
        if text[zone] == "-":
            offset = -offset
    # Days from 0001-01-01 to this date, then to 1970-01-01 (719,162 days after it).
    before = year - 1
    days = before * 365 + before // 4 - before // 100 + before // 400
    if month > 2:  # the days of the months before, in a common year, then February 29
        days += (367 * month - 362) // 12 - (1 if leap else 2)
    else:
        days += 31 if month == 2 else 0
    days += day - 1
    seconds = (days - 719_162) * 86400 + hour * 3600 + minute * 60 + second - offset
    if micro == 0:
        return float(seconds)
    total = float(seconds) * 1_000_000.0 + micro  # exact below `_EXACT`
    if -_EXACT < total < _EXACT:
        return total / 1_000_000.0
    return _parsed_event_time(text)  # valid, and far from now: `datetime` rounds it


def _number(text: str, start: int, end: int) -> int:
    """The ASCII digits `text[start:end]` as a number; -1 if any is not one."""
    value = 0
    for index in range(start, end):
        digit = ord(text[index]) - 48
        if digit < 0 or digit > 9:
            return -1
        value = value * 10 + digit
    return value


def _checked(document: dict[str, Any]) -> Report:
    offender = _object(document, "offender")
    victim = _object(document, "victim")
    platform = _string(document, "platform", 64)
    if not _PLATFORM.fullmatch(platform):
        raise _Invalid("bad_value", "platform: only lowercase a-z, 0-9, '_', '.', '-' allowed")
    category = _string(document, "category", 64)
    if category not in CATEGORIES:
        raise _Invalid(
            "unknown_category",
            f"category: {category!r} is not one of {', '.join(sorted(CATEGORIES))}",
        )
    return Report(
        report_id=_string(document, "report_id", 128),
        platform=platform,
        event_time=_timestamp(document, "reported_at"),
        category=category,
        offender_account=_string(offender, "account", 256, prefix="offender."),
        victim_account=_string(victim, "account", 256, prefix="victim."),
        victim_region=_string(victim, "region", 64, prefix="victim."),
        offender_signals=_signals(offender),
        text=_optional_string(document, "text", MAX_TEXT_CHARS),
        reporter=_optional_string(document, "reporter", 256),
    )


def _object(document: dict[str, Any], field: str) -> dict[str, Any]:
    if field not in document:
        raise _Invalid("missing_field", f"{field}: missing")
    value = document[field]
    if not isinstance(value, dict):
        raise _Invalid("wrong_type", f"{field}: expected an object, got {_kind(value)}")
    return value


def _string(document: dict[str, Any], field: str, max_chars: int, prefix: str = "") -> str:
    if field not in document:
        raise _Invalid("missing_field", f"{prefix}{field}: missing")
    value = document[field]
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"{prefix}{field}: expected a string, got {_kind(value)}")
    if not 1 <= len(value) <= max_chars:
        raise _Invalid(
            "bad_value", f"{prefix}{field}: must be 1 to {max_chars} characters, got {len(value)}"
        )
    return value


def _optional_string(document: dict[str, Any], field: str, max_chars: int) -> str | None:
    if document.get(field) is None:
        return None
    value = document[field]
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"{field}: expected a string, got {_kind(value)}")
    if len(value) > max_chars:
        raise _Invalid("bad_value", f"{field}: at most {max_chars} characters, got {len(value)}")
    return value


def _signals(offender: dict[str, Any]) -> Mapping[str, str]:
    signals = offender.get("signals")
    if signals is None:
        return {}
    if not isinstance(signals, dict):
        raise _Invalid("wrong_type", f"offender.signals: expected an object, got {_kind(signals)}")
    for key, value in signals.items():
        if not isinstance(value, str):
            raise _Invalid(
                "wrong_type", f"offender.signals.{key}: expected a string, got {_kind(value)}"
            )
        if not 1 <= len(value) <= 256:
            raise _Invalid("bad_value", f"offender.signals.{key}: must be 1 to 256 characters")
    return signals


def _timestamp(document: dict[str, Any], field: str) -> float:
    text = _string(document, field, 64)
    if not _RFC3339.fullmatch(text):
        raise _Invalid(
            "bad_timestamp", f"{field}: not an RFC 3339 timestamp with an offset or Z: {text!r}"
        )
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise _Invalid("bad_timestamp", f"{field}: {exc}") from None


def _kind(value: object) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
