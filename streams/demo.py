"""The demo case for `linkwatch run --demo`: a fictional offender, victims in three counties."""

from __future__ import annotations

import orjson

__all__ = ["demo_reports"]

# All names are invented. One man befriends young women with a fake profile, opens with
# the same line, and moves county after county; each report alone looks local.
_CASE = [
    ("chirp-4471", "2025-02-03T21:14:00Z", "ellie.marsh", "norfolk", "impersonation"),
    ("chirp-4472", "2025-02-09T08:02:00+00:00", "ellie.marsh", "norfolk", "harassment"),
    ("chirp-5190", "2025-05-17T23:40:00+01:00", "sam.okafor", "suffolk", "impersonation"),
    ("chirp-6034", "2025-09-01T19:05:00+01:00", "jess_kirby", "kent", "harassment"),
]


def demo_reports() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "report_id": report_id,
                "platform": "chirp",
                "reported_at": reported_at,
                "category": category,
                "offender": {"account": "tom.ashby.photo"},
                "victim": {"account": victim, "region": region},
                "text": "Can I tell you a secret?",
                "reporter": "victim",
            }
        )
        for report_id, reported_at, victim, region, category in _CASE
    ]
