"""Poison input, fuzzed: whatever reaches the reports topic or the intake API is processed or
rejected with a reason, every item is counted, and the worker stays up and keeps working."""

from __future__ import annotations

import json
import string
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from graph.contract import CATEGORIES, REJECTION_REASONS
from streams.broker import EmbeddedBroker
from tests.factories import make_report, serial_case
from tests.faults.conftest import (
    Deployment,
    Worker,
    lagging,
    metric_values,
    processed,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

FUZZ = settings(
    deadline=None,
    database=None,  # nothing written outside the test's own files
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- what is thrown at linkwatch ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Field values a producer gets nearly right: the right type, an edge of the rules, or junk.
names = st.text(alphabet=string.ascii_lowercase + string.digits + "._-", min_size=1, max_size=12)
timestamps = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda moment: moment.isoformat()),
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1)).map(
        lambda moment: moment.isoformat()  # no offset: a bad timestamp
    ),
    st.sampled_from(["2025-06-01T10:00:00Z", "2025-02-30T10:00:00Z", "last tuesday", ""]),
)
FIELDS = [
    ("report_id",),
    ("platform",),
    ("reported_at",),
    ("category",),
    ("offender",),
    ("offender", "account"),
    ("offender", "signals"),
    ("victim",),
    ("victim", "account"),
    ("victim", "region"),
    ("text",),
    ("reporter",),
]


@st.composite
def valid_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A report in the contract for platform chirp, from tests/factories.py."""
    signals = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(["email_hash", "phone_hash", "device_id", "ip"]),
            st.text(min_size=1, max_size=8),
            max_size=3,
        )
    )
    return make_report(
        draw(names),
        draw(names),
        draw(st.sampled_from(["kent", "norfolk", "suffolk", "devon", "essex"])),
        at=timedelta(hours=draw(st.integers(0, 24 * 200))),
        report_id=f"fuzz-{draw(st.integers(0, 10**6))}",
        category=draw(st.sampled_from(sorted(CATEGORIES))),
        signals=signals,
    )


@st.composite
def mutated_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A valid report with one to three fields deleted, retyped or given odd values."""
    report = draw(valid_reports())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FIELDS))
        parent = report
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent.get(key), dict) else {}
        value = draw(
            st.one_of(
                json_values,
                names,
                timestamps,
                st.sampled_from(sorted(CATEGORIES)),
                st.text(min_size=0, max_size=300),
                st.integers(4090, 4100).map(lambda n: "x" * n),  # around the text limit
                st.just("pixgram"),  # another platform: a platform key may not post it
            )
        )
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return report


def dump(value: Any) -> bytes:
    """JSON as a careless producer writes it: ints of any size, and NaN or Infinity (which
    JSON does not have) for odd floats."""
    return json.dumps(value, ensure_ascii=False).encode()


documents = st.one_of(valid_reports(), mutated_reports(), json_values)
too_large = st.integers(64 * 1024 + 1, 70 * 1024).map(lambda size: b'{"x": "' + b"y" * size + b'"}')
small_messages = st.one_of(st.binary(max_size=200), documents.map(dump))
# About one message in twenty is over the 64 KiB limit.
topic_messages = st.integers(0, 19).flatmap(lambda n: too_large if n == 0 else small_messages)
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", None]
# A report this platform's key may not post: the whole request is refused (403).
foreign = valid_reports().map(lambda report: report | {"platform": "pixgram"})
api_bodies = st.one_of(
    st.tuples(st.lists(documents, max_size=5), foreign).map(
        lambda items: dump([*items[0], items[1]])
    ),
    st.lists(documents, min_size=1, max_size=25).map(dump),
    st.lists(documents, max_size=3).map(dump),  # [] is a 400
    json_values.map(dump),
    st.binary(max_size=200),
)


# -- one worker for the whole module --------------------------------------------------------


@dataclass
class Target:
    deployment: Deployment
    worker: Worker
    platform_key: str
    producer: KafkaProducer
    # What the tests sent, for the totals at the end.
    sent_to_topic: list[bytes] = field(default_factory=list)
    api_statuses: Counter[int] = field(default_factory=Counter)
    api_items: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def target(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    deployment = Deployment(broker, tmp_path_factory.mktemp("poison"))
    key = deployment.key("platform", platform="chirp", name="fuzzed platform")
    # The fuzz is one client sending as fast as it can; the per-key rate limit is not what
    # is under test here.
    worker = deployment.worker(LINKWATCH_API_RATE="100000")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    try:
        yield Target(deployment, worker, key, producer)
    finally:
        producer.close()
        deployment.close()


def counters(worker: Worker) -> Counter[str]:
    """The report and API counters of the worker's /metrics, flattened."""
    found: Counter[str] = Counter()
    for (name, labels), value in metric_values(worker).items():
        if name in ("linkwatch_reports_total", "linkwatch_rejections_total"):
            found[f"{name}{dict(labels)}"] = int(value)
        if name == "linkwatch_api_requests_total" and dict(labels)["endpoint"] == "reports":
            found[f"api {dict(labels)['status']}"] = int(value)
    return found


def settle(target: Target, expected: int) -> None:
    """Until the worker has finished `expected` messages in all and has nothing left."""
    wait_until(
        lambda: processed(target.worker) >= expected and not lagging(target.worker),
        120,
        f"{expected} messages processed",
        alive=[target.worker],
    )


# -- the tests ------------------------------------------------------------------------------


def test_anything_on_the_reports_topic_is_processed_or_rejected_with_its_reason(
    target: Target,
) -> None:
    deployment, worker = target.deployment, target.worker
    topic = deployment.settings.reports_topic
    before = processed(worker)

    @settings(FUZZ, max_examples=50)
    @given(st.lists(st.tuples(st.none() | st.binary(max_size=16), topic_messages), max_size=20))
    def produce(batch: list[tuple[bytes | None, bytes]]) -> None:
        for key, value in batch:
            target.producer.send(topic, key=key, value=value)
        target.producer.flush()
        target.sent_to_topic += [value for _, value in batch]
        assert worker.process is not None and worker.process.poll() is None, worker.tail()

    produce()
    sent = target.sent_to_topic
    settle(target, before + len(sent))
    assert processed(worker) == before + len(sent), "a message was counted twice"

    rejected = deployment.read(deployment.settings.rejected_topic)
    assert not Counter(r.value for r in rejected) - Counter(sent), "a rejection nobody sent"
    for record in rejected:
        headers = dict(record.headers)
        assert headers["linkwatch.reason"].decode() in REJECTION_REASONS, headers
        assert headers["linkwatch.detail"], headers
        source_topic, partition, offset = headers["linkwatch.source"].decode().rsplit("/", 2)
        assert source_topic == topic, headers
        assert int(partition) in range(deployment.settings.partitions) and int(offset) >= 0
    found = counters(worker)
    assert found["linkwatch_reports_total{'outcome': 'rejected'}"] == len(rejected)
    by_reason = Counter(dict(r.headers)["linkwatch.reason"].decode() for r in rejected)
    for reason in REJECTION_REASONS:
        assert found[f"linkwatch_rejections_total{{'reason': '{reason}'}}"] == by_reason[reason]
    print(f"{len(sent)} messages: {len(sent) - len(rejected)} processed, rejected {by_reason}")


def post(worker: Worker, key: str, body: bytes, content_type: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}/v1/reports", data=body, method="POST"
    )
    request.add_header("Authorization", f"Bearer {key}")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, data, kind = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, data, kind = error.code, error.read(), error.headers
    assert "application/json" in kind.get("Content-Type", ""), (status, data[:200])
    return status, orjson.loads(data)


def test_anything_posted_to_the_intake_api_is_answered_item_by_item_or_refused(
    target: Target,
) -> None:
    worker = target.worker
    before_processed, before = processed(worker), counters(worker)

    valid = orjson.dumps(make_report("limits", "v", "kent", report_id="limits-1"))
    over_a_mebibyte = b"[" + b",".join([valid] * (2**20 // len(valid) + 1)) + b"]"
    over_a_thousand = b"[" + b",".join([b"{}"] * 1001) + b"]"

    @settings(FUZZ, max_examples=100)
    @example(over_a_mebibyte, "application/json")
    @example(over_a_thousand, "application/json")
    @given(api_bodies, st.sampled_from(CONTENT_TYPES))
    def send(body: bytes, content_type: str | None) -> None:
        status, answer = post(worker, target.platform_key, body, content_type)
        target.api_statuses[status] += 1
        if status != 202:
            assert status in (400, 403, 413), (status, answer)
            assert isinstance(answer.get("error"), str) and answer["error"], answer
            return
        items = orjson.loads(body)
        results = answer["results"]
        assert [result["index"] for result in results] == list(range(len(items)))
        statuses = Counter(result["status"] for result in results)
        assert set(statuses) <= {"accepted", "duplicate", "rejected"}, results
        assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (
            statuses["accepted"], statuses["duplicate"], statuses["rejected"]
        )  # fmt: skip
        for result in results:
            if result["status"] == "rejected":
                assert result["reason"] in REJECTION_REASONS, result
                assert isinstance(result["detail"], str) and result["detail"], result
        target.api_items.update(statuses)
        assert worker.process is not None and worker.process.poll() is None, worker.tail()

    send()
    # Accepted items went on to the graph; rejected ones were counted at the API.
    expected = before_processed + target.api_items["accepted"] + target.api_items["rejected"]
    settle(target, expected)
    assert processed(worker) == expected, "an item was lost or counted twice"
    after = counters(worker)
    for status, count in target.api_statuses.items():
        assert after[f"api {status}"] - before[f"api {status}"] == count, status
    print(f"API answers {dict(target.api_statuses)}, items {dict(target.api_items)}")


def test_valid_reports_at_the_size_limit_all_go_through(target: Target) -> None:
    """Reports just under the 64 KiB limit, most of it offender signals the linker does
    not use: each becomes an identity row of about 180 KB, so a batch of them must reach
    the resolver and the graph in messages under Kafka's 1 MiB, not as one pack of 24."""
    worker, topic = target.worker, target.deployment.settings.reports_topic
    before, accepted = processed(worker), "linkwatch_reports_total{'outcome': 'accepted'}"
    accepted_before = counters(worker)[accepted]
    sent = []
    for number in range(24):
        signals = {"phone_hash": f"limit-phone-{number % 3}"}
        signals |= {f"x{index}": "v" for index in range(5_400)}
        report = make_report(f"limit.{number}", f"limit-victim-{number}", "kent",
                             report_id=f"limit-{number}", signals=signals)  # fmt: skip
        value = orjson.dumps(report)
        assert 60 * 1024 < len(value) <= 64 * 1024, len(value)
        sent.append(value)
    # In one record batch, so that they reach intake in one fetch, as a backlog does.
    producer = KafkaProducer(
        bootstrap_servers=target.deployment.settings.bootstrap,
        acks="all",
        linger_ms=60_000,
        batch_size=4 << 20,
        max_request_size=4 << 20,
    )
    try:
        for value in sent:
            producer.send(topic, value=value, partition=0)
        producer.flush()
    finally:
        producer.close()
    settle(target, before + len(sent))
    assert processed(worker) == before + len(sent)
    assert counters(worker)[accepted] == accepted_before + len(sent)
    assert worker.process is not None and worker.process.poll() is None, worker.tail()


def test_a_message_at_kafkas_limit_is_rejected_with_its_bytes_whole(target: Target) -> None:
    """The rejected copy is the message, its key and three headers: over the producer's
    default 1,000,000 bytes for a message the reports topic itself took."""
    worker, settings = target.worker, target.deployment.settings
    before = processed(worker)
    key, value = b"k" * 200, b'{"x": "' + b"y" * (1_000_000 - 9) + b'"}'
    target.producer.send(settings.reports_topic, key=key, value=value)
    target.producer.flush()
    settle(target, before + 1)
    [copy] = [r for r in target.deployment.read(settings.rejected_topic) if r.value == value]
    assert copy.key == key and dict(copy.headers)["linkwatch.reason"] == b"too_large"
    assert worker.process is not None and worker.process.poll() is None, worker.tail()


def test_after_the_fuzz_the_worker_still_raises_an_alert(target: Target) -> None:
    worker = target.worker
    assert worker.process is not None and worker.process.poll() is None, worker.tail()
    case = [orjson.loads(raw) for raw in serial_case("after.the.fuzz", regions=3)]
    status, answer = post(worker, target.platform_key, orjson.dumps(case), "application/json")
    assert (status, answer["accepted"]) == (202, 3), answer

    def alerted() -> bool:
        return any(
            "chirp:after.the.fuzz" in alert["accounts"] for alert in target.deployment.alerts()
        )

    wait_until(alerted, 60, "the alert for a valid case sent after the fuzz", alive=[worker])
