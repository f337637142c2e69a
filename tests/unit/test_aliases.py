"""Alias linking: which accounts become one actor, why, and what never links."""

from __future__ import annotations

import pickle
import sys

from graph.aliases import AliasResolver, Link, Merge, opener_of
from graph.contract import Report, parse_report
from graph.identity import actor_id_for
from tests.factories import encode, make_report

SECRET = b"test-secret"


def report(account: str, text: str | None = None, **signals: str) -> Report:
    parsed = parse_report(encode(make_report(account, signals=signals, text=text)))
    assert isinstance(parsed, Report)
    return parsed


def actor(account: str) -> str:
    return actor_id_for(f"chirp:{account}", SECRET)


def test_accounts_without_shared_signals_stay_apart() -> None:
    resolver = AliasResolver(SECRET)
    assert resolver.resolve(report("a", phone_hash="p1")).actor_id == actor("a")
    assert resolver.resolve(report("b", phone_hash="p2")).actor_id == actor("b")


def test_a_shared_strong_signal_links_and_the_older_actor_keeps_its_id() -> None:
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", email_hash="e1"))
    second = resolver.resolve(report("b", email_hash="e1"))
    assert second.actor_id == actor("a")
    assert second.links == (Link(("chirp:a", "chirp:b"), "email_hash"),)
    # b is new: it joins a's actor, and there is no state of b's to move.
    assert second.merges == ()
    resolver.resolve(report("c", phone_hash="p3"))
    third = resolver.resolve(report("c", email_hash="e1"))
    assert third.merges == (Merge(absorbed=actor("c"), into=actor("a")),)


def test_chain_of_different_signals_is_transitive() -> None:
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", phone_hash="p1"))
    resolver.resolve(report("b", phone_hash="p1", email_hash="e2"))
    resolver.resolve(report("c", email_hash="e2", device_id="d3"))
    resolver.resolve(report("d", device_id="d3"))
    assert {resolver.actor_of(f"chirp:{x}") for x in "abcd"} == {actor("a")}


def test_star_around_one_device() -> None:
    resolver = AliasResolver(SECRET)
    for name in "abcdef":
        resolver.resolve(report(name, device_id="shared-laptop"))
    assert {resolver.actor_of(f"chirp:{x}") for x in "abcdef"} == {actor("a")}


def test_one_report_bridges_two_existing_actors() -> None:
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", phone_hash="p1"))
    resolver.resolve(report("b", phone_hash="p1"))
    resolver.resolve(report("c", email_hash="e9"))
    resolver.resolve(report("d", email_hash="e9"))
    bridge = resolver.resolve(report("b", email_hash="e9"))
    assert bridge.merges == (Merge(absorbed=actor("c"), into=actor("a")),)
    assert {resolver.actor_of(f"chirp:{x}") for x in "abcd"} == {actor("a")}


def test_a_signal_seen_again_on_the_same_account_links_nothing_new() -> None:
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", phone_hash="p1"))
    again = resolver.resolve(report("a", phone_hash="p1"))
    assert again.links == () and again.merges == ()


def test_ip_is_weak_and_never_links_alone() -> None:
    resolver = AliasResolver(SECRET)
    for name in "abc":
        assert resolver.resolve(report(name, ip="100.64.0.1")).actor_id == actor(name)


def test_hub_guard_stops_linking_past_the_limit_and_reports_the_hub_once() -> None:
    resolver = AliasResolver(SECRET, max_accounts_per_signal=3)
    empty = "e3b0c44298fc1c149afbf4c8996fb924"  # the hash of an empty string, say
    results = [resolver.resolve(report(f"u{i}", email_hash=empty)) for i in range(50)]
    hubs = [hub for result in results for hub in result.hubs]
    assert len(hubs) == 1
    assert hubs[0].signal == "email_hash" and hubs[0].accounts == 4
    assert empty not in hubs[0].fingerprint
    # The first three share an actor (as far as the limit allows); nobody after them does.
    assert {result.actor_id for result in results[:3]} == {actor("u0")}
    assert [result.actor_id for result in results[3:]] == [actor(f"u{i}") for i in range(3, 50)]
    assert resolver.hubs == 1


def test_text_openers_link_only_when_configured() -> None:
    opener = "Can I tell you a secret? I saw your photos."
    plain = AliasResolver(SECRET)
    assert plain.resolve(report("a", text=opener)).actor_id == actor("a")
    assert plain.resolve(report("b", text=opener)).actor_id == actor("b")
    linking = AliasResolver(SECRET, link_by_text=True)
    linking.resolve(report("a", text=opener))
    assert linking.resolve(report("b", text="can i tell you a SECRET?!")).actor_id == actor("a")


def test_opener_is_the_normalised_first_sentence() -> None:
    assert opener_of("Can I tell you a secret?  I saw your photos.") == "can i tell you a secret"
    assert opener_of("hi") is None
    assert opener_of(None) is None


def test_the_hash_of_an_empty_string_never_links_anyone() -> None:
    import hashlib

    resolver = AliasResolver(SECRET)
    empty = hashlib.sha256(b"").hexdigest()
    first = resolver.resolve(report("a", email_hash=empty))
    assert len(first.hubs) == 1
    assert resolver.resolve(report("b", email_hash=empty)).actor_id == actor("b")
    assert resolver.resolve(report("c", phone_hash="NULL")).actor_id == actor("c")


def test_a_new_account_bridging_two_actors_merges_them() -> None:
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", phone_hash="p1"))
    resolver.resolve(report("c", email_hash="e9"))
    bridge = resolver.resolve(report("new", phone_hash="p1", email_hash="e9"))
    # The new account itself needs no merge record; the two existing actors do.
    assert bridge.merges == (Merge(absorbed=actor("c"), into=actor("a")),)
    assert bridge.actor_id == actor("a")


DAY = 86400.0


def dated(account: str, day: float, **signals: str) -> Report:
    parsed = parse_report(
        encode(make_report(account, signals=signals, at=__import__("datetime").timedelta(day)))
    )
    assert isinstance(parsed, Report)
    return parsed


def test_retention_forgets_actors_and_values_the_window_has_left_behind() -> None:
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    resolver.resolve(dated("a", 0, device_id="d1"))
    resolver.resolve(dated("b", 1, device_id="d1"))  # a and b are one actor
    resolver.resolve(dated("c", 2, phone_hash="p1"))
    assert (resolver.accounts, resolver.values) == (3, 2)
    resolver.resolve(dated("z", 100))  # the window has slid past all of them
    # Reusing the old device links nothing: the uses that linked it are gone.
    fresh = resolver.resolve(dated("d", 101, device_id="d1"))
    assert fresh.links == () and fresh.actor_id == actor("d")
    assert resolver.resolve(dated("a", 102, device_id="d1")).actor_id == actor("d")
    # Retention checks a few accounts and values per report; two reports later the old
    # accounts (b, c) and values (p1) are gone: left are z, d, a and the device d1 anew.
    resolver.resolve(dated("z", 103))
    resolver.resolve(dated("z", 104))
    assert (resolver.accounts, resolver.values) == (3, 1)


def test_an_account_whose_actor_left_the_window_is_a_new_actor_before_retention_runs() -> None:
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    for n in range(20):  # twenty days of pairs of linked accounts, for retention to do
        resolver.resolve(dated(f"old{n}", n, device_id=f"d{n // 2}"))
    assert resolver.actor_of("chirp:old19") == actor("old18")
    resolver.resolve(dated("z", 200))
    assert resolver.accounts > 10  # not all forgotten yet: a few per report
    again = resolver.resolve(dated("old19", 201, device_id="d9"))
    assert again.actor_id == actor("old19") and again.links == () and again.merges == ()
    while resolver.forget_some():  # as the worker's timer does when no reports come
        pass
    assert (resolver.accounts, resolver.values) == (2, 1)  # z, old19 and its device


def test_the_tables_give_their_memory_back_once_the_window_has_slid_past_them() -> None:
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    for n in range(2_000):  # all inside one window: nothing is forgotten while they arrive
        resolver.resolve(dated(f"a{n}", n / 100, device_id=f"d{n}"))
    full = sys.getsizeof(resolver._parent), sys.getsizeof(resolver._values)
    resolver.resolve(dated("z", 200))
    while resolver.forget_some():
        pass
    # A dict keeps its hash table when entries go; the tables must have been copied down.
    assert (resolver.accounts, resolver.values) == (1, 0)
    assert sys.getsizeof(resolver._parent) * 20 < full[0]
    assert sys.getsizeof(resolver._values) * 20 < full[1]


def test_an_actor_with_one_recent_account_keeps_all_its_accounts() -> None:
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    resolver.resolve(dated("a", 0, device_id="d1"))
    resolver.resolve(dated("b", 1, device_id="d1"))
    for day in range(10, 60, 10):
        resolver.resolve(dated("b", day))  # b keeps reporting; a never does again
    assert resolver.actor_of("chirp:a") == resolver.actor_of("chirp:b") == actor("a")


def test_a_report_older_than_the_window_links_nothing() -> None:
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    resolver.resolve(dated("a", 100, device_id="d1"))
    old = resolver.resolve(dated("b", 10, device_id="d1"))
    assert old.links == () and old.actor_id == actor("b")
    assert resolver.accounts == 1


def test_a_value_held_by_its_accounts_root_links_as_one_held_on_its_own() -> None:
    """Most values are held by the root of their one account (graph/aliases.py:_Root):
    its newest use, a second account, a merge of that root, erasure, retention and a
    hand-over to a fresh process all see the value as the accounts' uses make it."""
    resolver = AliasResolver(SECRET, window_seconds=30 * DAY)
    resolver.resolve(dated("a", 0, device_id="d1", email_hash="e1"))
    resolver.resolve(dated("a", 20, device_id="d1", email_hash="e1"))  # their newest use
    resolver.resolve(dated("z", 40))  # day 0 is out of the window now, day 20 is not
    shared = resolver.resolve(dated("b", 41, device_id="d1"))
    assert shared.links == (Link(("chirp:a", "chirp:b"), "device_id"),)
    # e1 was a's second value (its root held d1): used by a new account, it links too.
    assert resolver.resolve(dated("c", 42, email_hash="e1")).actor_id == actor("a")
    # An older actor absorbs h's root, which holds h's device: the device still links h.
    resolver.resolve(dated("h", 43, device_id="d2"))
    resolver.resolve(dated("h", 44, phone_hash="p1"))
    resolver.resolve(dated("a", 45, phone_hash="p1"))
    resolver = pickle.loads(pickle.dumps(resolver))  # as a resolver process hands it on
    later = resolver.resolve(dated("k", 46, device_id="d2"))
    assert later.links == (Link(("chirp:h", "chirp:k"), "device_id"),)
    assert later.actor_id == actor("a")
    # Erased, an account's value is forgotten with it; its root may hold another.
    resolver.resolve(dated("m", 47, device_id="d3"))
    assert resolver.erase("chirp:m") == actor("m")
    assert resolver.resolve(dated("n", 48, device_id="d3")).links == ()
    resolver.resolve(dated("m", 49, device_id="d4"))
    assert resolver.resolve(dated("q", 50, device_id="d4")).actor_id == actor("m")
    # Left behind by the window, held values are forgotten like any other.
    resolver.resolve(dated("z", 200))
    while resolver.forget_some():
        pass
    assert (resolver.accounts, resolver.values) == (1, 0)


def test_an_erased_founding_account_that_comes_back_founds_an_actor_of_another_id() -> None:
    """Erased, a founding account leaves its actor's id to the accounts it linked. Back, it
    founds a new actor, which must not take that id: two actors of one id merged into each
    other, which went round between the graph's partitions forever (found in session 23)."""
    resolver = AliasResolver(SECRET)
    resolver.resolve(report("a", device_id="d1"))
    resolver.resolve(report("b", device_id="d1"))
    assert resolver.erase("chirp:a") == actor("a")
    assert resolver.actor_of("chirp:b") == actor("a")  # b keeps the actor's id
    back = resolver.resolve(report("a", phone_hash="p1"))
    assert back.actor_id not in (actor("a"), actor("b")) and back.merges == ()
    resolver.resolve(report("c", email_hash="e1"))
    bridge = resolver.resolve(report("c", phone_hash="p1"))  # a's new actor, older, takes c's
    assert bridge.merges == (Merge(absorbed=actor("c"), into=back.actor_id),)
    linked = resolver.resolve(report("b", email_hash="e1"))  # a's old actor is the oldest
    assert linked.merges == (Merge(absorbed=back.actor_id, into=actor("a")),)
    assert {resolver.actor_of(f"chirp:{x}") for x in "abc"} == {actor("a")}
    copy = pickle.loads(pickle.dumps(resolver))  # as a resolver process hands it on
    assert copy.erase("chirp:a") == actor("a") and copy._kept_ids == resolver._kept_ids
