"""The demo for `linkwatch run --demo`: one fictional man, four fake accounts, four counties."""

from __future__ import annotations

import orjson

__all__ = ["demo_reports"]

# All names are invented. He befriends young women with a fake profile and always opens
# with the same line; after each one he moves county and makes a new account. Each account
# alone looks local. What the accounts share (a phone, an email, a laptop) joins them up.
_OPENER = "Can I tell you a secret? I've never told anyone this."
_CASE = [
    # report id, time, account, signals, victim, region, category
    ("chirp-4471", "2025-02-03T21:14:00Z", "tom.ashby.photo", {"phone_hash": "9f2c41"},
     "ellie.marsh", "norfolk", "impersonation"),
    ("chirp-4472", "2025-02-09T08:02:00+00:00", "tom.ashby.photo", {"phone_hash": "9f2c41"},
     "ellie.marsh", "norfolk", "harassment"),
    ("chirp-5190", "2025-05-17T23:40:00+01:00", "t.ashby_art", {"phone_hash": "9f2c41",
     "email_hash": "b7e0d3"}, "sam.okafor", "suffolk", "impersonation"),
    ("chirp-6034", "2025-09-01T19:05:00+01:00", "ashby.lens", {"email_hash": "b7e0d3",
     "device_id": "laptop-77a1"}, "jess_kirby", "kent", "harassment"),
    ("chirp-7120", "2026-01-12T22:30:00Z", "lens.and.light", {"device_id": "laptop-77a1",
     "ip": "100.64.12.9"}, "ruth.ellery", "devon", "impersonation"),
]  # fmt: skip


def demo_reports() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "report_id": report_id,
                "platform": "chirp",
                "reported_at": reported_at,
                "category": category,
                "offender": {"account": account, "signals": signals},
                "victim": {"account": victim, "region": region},
                "text": _OPENER,
                "reporter": "victim",
            }
        )
        for report_id, reported_at, account, signals, victim, region, category in _CASE
    ]
