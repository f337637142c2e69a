"""Pseudonyms: what a report keeps of a person once it is past intake."""

from __future__ import annotations

import hashlib
import random
import string

import pytest

from graph.aliases import BLANK_SIGNAL, opener_of
from graph.contract import Report, parse_report
from graph.identity import Pseudonyms
from graph.pipeline import Pipeline
from graph.privacy import pseudonymise
from graph.rules import CrossRegionRule
from tests.factories import encode, make_report, serial_case

KEY = b"k" * 32


def test_a_token_opens_to_the_account_and_only_with_its_key() -> None:
    pseudonyms = Pseudonyms(KEY)
    token = pseudonyms.offender("tom.ashby.photo")
    assert token.startswith("o_") and "ashby" not in token
    assert token == pseudonyms.offender("tom.ashby.photo")  # a stable pseudonym
    assert pseudonyms.open(token) == "tom.ashby.photo"
    assert Pseudonyms(b"x" * 32).open(token) is None  # another key cannot open it
    assert Pseudonyms(b"x" * 32).offender("tom.ashby.photo") != token


@pytest.mark.parametrize("seed", range(5))
def test_a_changed_token_is_refused(seed: int) -> None:
    pseudonyms = Pseudonyms(KEY)
    token = pseudonyms.offender("ravenhart" * (seed + 1))
    rng = random.Random(seed)
    index = rng.randrange(2, len(token))
    alphabet = string.ascii_letters + string.digits + "-_"
    forged = token[:index] + rng.choice(alphabet.replace(token[index], "")) + token[index + 1 :]
    assert pseudonyms.open(forged) is None
    assert pseudonyms.open("o_not-a-token") is None
    assert pseudonyms.reveal("chirp:v_1234") == "chirp:v_1234"


def test_unicode_accounts_round_trip() -> None:
    pseudonyms = Pseudonyms(KEY)
    for account in ("élodie", "名前", "a" * 256):
        assert pseudonyms.open(pseudonyms.offender(account)) == account


def test_a_pseudonymised_report_keeps_no_identifier_text_or_reporter() -> None:
    raw = make_report(
        "ravenhart", "ellie", "kent", text="Can I tell you a secret? Call me.",
        reporter="ellie@example.org", signals={"email_hash": "e1", "phone_hash": "null",
                                              "device_id": hashlib.md5(b"").hexdigest()},
    )  # fmt: skip
    report = parse_report(encode(raw))
    assert isinstance(report, Report)
    kept = pseudonymise(report, Pseudonyms(KEY))
    text = repr(kept.to_row())
    for identifier in ("ravenhart", "ellie", "e1", "example.org"):
        assert identifier not in text
    assert kept.text == "can i tell you a secret"
    assert kept.offender_signals["phone_hash"] == BLANK_SIGNAL
    assert kept.offender_signals["device_id"] == BLANK_SIGNAL
    assert kept.reporter is None and kept.report_id == report.report_id


@pytest.mark.parametrize("seed", range(20))
def test_the_opener_of_an_opener_is_itself(seed: int) -> None:
    rng = random.Random(seed)
    words = ["can", "I", "tell", "you", "a", "secret?", "Hi!", "it's", "me.", "\n", "ok", "x" * 50]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
    once = opener_of(text)
    assert opener_of(once) == once


def test_alerts_carry_the_platforms_own_accounts() -> None:
    alerts = (
        Pipeline(b"secret", 365 * 86400.0, CrossRegionRule())
        .feed(serial_case("tom.ashby.photo"), now=0.0)
        .alerts
    )
    assert alerts and alerts[0].accounts == ("chirp:tom.ashby.photo",)


def _everything(pipeline: Pipeline) -> str:
    """Every identifier the pipeline's state holds, as text."""
    state = [
        (actor.actor_id, actor.to_dict())
        for partition in pipeline.partitions
        for actor in partition.graph.actors()
    ]
    return repr(state) + repr(
        vars(pipeline.resolver)
        if hasattr(pipeline.resolver, "__dict__")
        else [getattr(pipeline.resolver, s) for s in dir(pipeline.resolver)]
    )


def test_erasure_removes_an_offender_and_a_victim_from_graph_and_alias_state() -> None:
    pipeline = Pipeline(b"secret", 365 * 86400.0, CrossRegionRule(), partitions=4)
    lines = [
        *serial_case("tom.ashby.photo"),
        encode(make_report("someone-else", "victim-1", "kent", signals={"device_id": "d9"})),
        encode(make_report("tom.alias", "x-1", "devon", signals={"device_id": "d9"})),
    ]
    pipeline.feed(lines, now=0.0)
    pseudonyms = pipeline.pseudonyms
    token, victim = pseudonyms.offender("tom.ashby.photo"), pseudonyms.victim("chirp", "victim-1")
    assert token in _everything(pipeline) and victim in _everything(pipeline)
    survivor = pipeline.actor_of("chirp:tom.alias")

    pipeline.erase("chirp", "tom.ashby.photo")
    pipeline.erase("chirp", "victim-1")
    state = _everything(pipeline)
    assert token not in state and victim not in state
    # Accounts linked to each other, not through the erased one, are still one actor.
    assert pipeline.actor_of("chirp:tom.alias") == pipeline.actor_of("chirp:someone-else")
    assert pipeline.actor_of("chirp:tom.alias") == survivor
    # The erased account reporting again starts over, as a new actor.
    again = pipeline.feed(serial_case("tom.ashby.photo"), now=0.0)
    assert again.outcomes["accepted"] == 3


def test_the_pseudonyms_are_hmac_sha256() -> None:
    import hmac

    pseudonyms = Pseudonyms(KEY)
    victim_key = hmac.digest(KEY, b"linkwatch victim", "sha256")
    expected = hmac.new(victim_key, b"chirp:ellie", hashlib.sha256).hexdigest()[:20]
    assert pseudonyms.victim("chirp", "ellie") == f"v_{expected}"
