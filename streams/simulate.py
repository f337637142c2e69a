"""`linkwatch simulate`: a synthetic report stream with ground truth, to measure detection.

Deterministic for a given seed and scale. All names are invented. Each person in the truth
file has a kind:
- `serial`: the case linkwatch exists for. One person, several aliases (linked only by
  signals, in several shapes), victims one after another in different regions.
- `near_miss`: serial behaviour in exactly two regions (must not alert).
- `local`: a prolific harasser confined to one region (must not alert).
- `mover`: a harasser whose one victim moves between regions (must not alert).
- `brigade_target`: hundreds of reports on one account within hours (a brigade, not serial).
- `noise`: one-off offenders; many share carrier-NAT IPs, some an empty email's hash, some
  an office PC (a device shared in one town).

The stream also has redelivered duplicates, arrival out of order by up to five days, and
malformed lines.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SHAPES", "Simulation", "simulate"]

REGIONS = [
    "avon-and-somerset", "cambridgeshire", "cheshire", "cumbria", "derbyshire", "devon",
    "dorset", "durham", "essex", "gloucestershire", "hampshire", "kent", "lancashire",
    "lincolnshire", "norfolk", "north-yorkshire", "staffordshire", "suffolk", "surrey",
    "sussex", "west-mercia", "wiltshire",
]  # fmt: skip
PLATFORMS = ["chirp", "pixgram", "talkr"]
OPENERS = [
    "Can I tell you a secret? I have never said this to anyone.",
    "You seem really kind, can I trust you with something?",
    "I saw your photos and I think we were meant to meet.",
    "Promise you won't tell anyone what I am about to say.",
]
CATEGORIES = ["impersonation", "harassment", "threat", "sexual_content", "doxxing", "other"]
SHAPES = ["chain", "star", "bridge", "late_signal", "cross_platform"]
START = datetime(2025, 1, 1, tzinfo=UTC)
EMPTY_EMAIL_HASH = hashlib.sha256(b"").hexdigest()


@dataclass(slots=True)
class _Report:
    person: str
    moment: datetime
    platform: str
    account: str
    victim: str
    region: str
    category: str
    signals: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    report_id: str = ""

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "report_id": self.report_id,
            "platform": self.platform,
            "reported_at": self.moment.isoformat().replace("+00:00", "Z"),
            "category": self.category,
            "offender": {"account": self.account},
            "victim": {"account": self.victim, "region": self.region},
            "reporter": "victim",
        }
        if self.signals:
            document["offender"]["signals"] = self.signals
        if self.text is not None:
            document["text"] = self.text
        return document


@dataclass(slots=True)
class Simulation:
    lines: list[bytes]
    truth: dict[str, Any]


class _Generator:
    def __init__(self, seed: int, scale: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.scale = scale
        self.reports: list[_Report] = []
        self.people: dict[str, dict[str, Any]] = {}
        self._names = 0
        self.nat_ips = [f"100.64.{self.rng.randrange(256)}.{i}" for i in range(6)]

    def name(self, stem: str) -> str:
        self._names += 1
        return f"{stem}{self._names:05d}"

    def hexid(self) -> str:
        return f"{self.rng.getrandbits(96):024x}"

    def person(self, kind: str, person_id: str) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": kind, "accounts": []}
        self.people[person_id] = record
        return record

    def add(self, report: _Report) -> None:
        key = f"{report.platform}:{report.account}"
        accounts = self.people[report.person]["accounts"]
        if key not in accounts:
            accounts.append(key)
        self.reports.append(report)

    def serial(self, index: int) -> None:
        rng = self.rng
        person_id = f"serial-{index:04d}"
        self.person("serial", person_id)["shape"] = shape = SHAPES[index % len(SHAPES)]
        aliases = rng.randint(3, 6)
        victims = rng.randint(max(4, aliases), 9)
        opener = rng.choice(OPENERS)
        platform = rng.choice(PLATFORMS)
        accounts = [
            (platform if shape != "cross_platform" else PLATFORMS[i % len(PLATFORMS)],
             self.name(rng.choice(["lens.", "tom_", "photo.", "art.", "sam_"])))
            for i in range(aliases)
        ]  # fmt: skip
        phone, email, device = self.hexid(), self.hexid(), self.hexid()
        # Two groups joined late by one bridging report, for the `bridge` shape.
        group_b_email = self.hexid()
        moment = START + timedelta(days=rng.uniform(0, 200))
        recent: list[str] = []
        unlinked = set(range(1, aliases)) if shape == "late_signal" else set()
        for victim_index in range(victims):
            alias = min(aliases - 1, victim_index * aliases // victims)
            account_platform, account = accounts[alias]
            signals = self._serial_signals(
                shape, alias, aliases, phone, email, device, group_b_email
            )
            if rng.random() < 0.5:
                signals["ip"] = rng.choice(self.nat_ips)
            # A new county each time: never one of the last two, so any three in a row differ.
            region = rng.choice([r for r in REGIONS if r not in recent])
            recent = [*recent[-1:], region]
            victim = self.name("v.")
            follow_ups = rng.randint(2 if alias in unlinked else 1, 3)
            for follow_up in range(follow_ups):
                report_signals = dict(signals)
                if alias in unlinked:
                    report_signals = {}  # this alias is linked only by its later reports
                    unlinked.discard(alias)
                self.add(
                    _Report(
                        person_id, moment + timedelta(days=3 * follow_up, hours=rng.uniform(0, 8)),
                        account_platform, account, victim, region,
                        rng.choice(["impersonation", "harassment", "sexual_content"]),
                        report_signals, opener if follow_up == 0 else None,
                    )
                )  # fmt: skip
            moment += timedelta(days=rng.uniform(15, 50))
        if shape == "bridge":
            # One more report from the last alias carries the first group's phone as well.
            account_platform, account = accounts[-1]
            self.add(
                _Report(person_id, moment, account_platform, account, self.name("v."),
                        rng.choice(REGIONS), "harassment",
                        {"phone_hash": phone, "email_hash": group_b_email}, opener)
            )  # fmt: skip

    @staticmethod
    def _serial_signals(
        shape: str, alias: int, aliases: int, phone: str, email: str, device: str, email_b: str
    ) -> dict[str, str]:
        if shape == "star":
            return {"device_id": device}
        if shape == "cross_platform":
            return {"email_hash": email}
        if shape == "bridge":
            # First half linked by phone, second half by another email; joined at the end.
            return {"phone_hash": phone} if alias < aliases // 2 else {"email_hash": email_b}
        # chain / late_signal: each alias shares one signal with the one before it.
        kinds = ["phone_hash", "email_hash", "device_id"]
        signals = {kinds[alias % 3]: f"{phone}-{alias}"}
        if alias > 0:
            signals[kinds[(alias - 1) % 3]] = f"{phone}-{alias - 1}"
        return signals

    def near_miss(self, index: int) -> None:
        rng = self.rng
        person_id = f"near-miss-{index:04d}"
        self.person("near_miss", person_id)
        platform = rng.choice(PLATFORMS)
        accounts = [self.name("alt.") for _ in range(rng.randint(2, 3))]
        phone = self.hexid()
        regions = rng.sample(REGIONS, 2)
        moment = START + timedelta(days=rng.uniform(0, 250))
        for victim_index in range(rng.randint(3, 6)):
            account = accounts[victim_index % len(accounts)]
            self.add(
                _Report(person_id, moment, platform, account, self.name("v."),
                        regions[victim_index % 2], "harassment", {"phone_hash": phone},
                        rng.choice(OPENERS))
            )  # fmt: skip
            moment += timedelta(days=rng.uniform(10, 40))

    def local(self, index: int) -> None:
        rng = self.rng
        person_id = f"local-{index:04d}"
        self.person("local", person_id)
        platform = rng.choice(PLATFORMS)
        account = self.name("troll.")
        region = rng.choice(REGIONS)
        moment = START + timedelta(days=rng.uniform(0, 100))
        for _ in range(rng.randint(10, 30)):
            self.add(
                _Report(person_id, moment, platform, account, self.name("v."), region,
                        rng.choice(CATEGORIES), {"ip": rng.choice(self.nat_ips)})
            )  # fmt: skip
            moment += timedelta(days=rng.uniform(1, 12))

    def mover(self, index: int) -> None:
        rng = self.rng
        person_id = f"mover-{index:04d}"
        self.person("mover", person_id)
        platform = rng.choice(PLATFORMS)
        account = self.name("ex.")
        moving_victim, other = self.name("v."), self.name("v.")
        regions = rng.sample(REGIONS, 3)
        moment = START + timedelta(days=rng.uniform(0, 200))
        for step, region in enumerate(regions):
            self.add(
                _Report(person_id, moment + timedelta(days=40 * step), platform, account,
                        moving_victim, region, "harassment")
            )  # fmt: skip
        self.add(
            _Report(person_id, moment + timedelta(days=20), platform, account, other, regions[0],
                    "threat")
        )  # fmt: skip

    def brigade(self, index: int) -> None:
        rng = self.rng
        person_id = f"brigade-target-{index:04d}"
        self.person("brigade_target", person_id)
        platform = rng.choice(PLATFORMS)
        account = self.name("creator.")
        moment = START + timedelta(days=rng.uniform(30, 300))
        for _ in range(rng.randint(100, 300)):
            self.add(
                _Report(person_id, moment + timedelta(minutes=rng.uniform(0, 360)), platform,
                        account, self.name("r."), rng.choice(REGIONS), rng.choice(CATEGORIES))
            )  # fmt: skip

    def noise(self, index: int) -> None:
        rng = self.rng
        person_id = f"noise-{index:05d}"
        self.person("noise", person_id)
        platform = rng.choice(PLATFORMS)
        account = self.name("user.")
        signals: dict[str, str] = {"ip": rng.choice(self.nat_ips)}
        draw = rng.random()
        if draw < 0.05:
            signals["email_hash"] = EMPTY_EMAIL_HASH
        elif draw < 0.5:
            signals["email_hash"] = self.hexid()
        moment = START + timedelta(days=rng.uniform(0, 365))
        for _ in range(rng.randint(1, 2)):
            self.add(
                _Report(person_id, moment, platform, account, self.name("v."),
                        rng.choice(REGIONS), rng.choice(CATEGORIES), dict(signals))
            )  # fmt: skip
            moment += timedelta(days=rng.uniform(1, 60))

    def office_pc(self, index: int, users: int) -> None:
        """Many unrelated people in one town reported from one shared device."""
        rng = self.rng
        device, region = self.hexid(), rng.choice(REGIONS)
        for user in range(users):
            person_id = f"office-{index:03d}-{user:03d}"
            self.person("noise", person_id)
            self.add(
                _Report(person_id, START + timedelta(days=rng.uniform(0, 365)),
                        rng.choice(PLATFORMS), self.name("desk."), self.name("v."), region,
                        "harassment", {"device_id": device})
            )  # fmt: skip

    def build(self) -> Simulation:
        scale, rng = self.scale, self.rng
        for i in range(4 * scale):
            self.serial(i)
        for i in range(3 * scale):
            self.near_miss(i)
        for i in range(3 * scale):
            self.local(i)
        for i in range(2 * scale):
            self.mover(i)
        for i in range(scale):
            self.brigade(i)
        for i in range(150 * scale):
            self.noise(i)
        for i in range(scale):
            self.office_pc(i, users=40)

        for number, report in enumerate(self.reports):
            report.report_id = f"{report.platform}-{number:07d}"
        # Arrival is event time plus up to five days: out of order by days.
        arrivals = sorted(
            ((report.moment + timedelta(days=rng.uniform(0, 5)), n) for n, report in
             enumerate(self.reports))
        )  # fmt: skip
        lines = [orjson.dumps(self.reports[n].document()) for _, n in arrivals]
        duplicates = 0
        for _ in range(len(lines) // 50):  # redelivered duplicates, later in the stream
            position = rng.randrange(len(lines))
            lines.insert(rng.randrange(position, len(lines) + 1), lines[position])
            duplicates += 1
        malformed = _malformed_lines(rng, len(lines) // 100 + 9)
        for line in malformed:
            lines.insert(rng.randrange(len(lines) + 1), line)
        truth = {
            "seed": self.seed,
            "scale": scale,
            "reports": len(self.reports),
            "lines": len(lines),
            "duplicate_lines": duplicates,
            "malformed_lines": len(malformed),
            "people": self.people,
            "report_person": {
                f"{report.platform}:{report.report_id}": report.person for report in self.reports
            },
        }
        return Simulation(lines, truth)


def _malformed_lines(rng: random.Random, count: int) -> list[bytes]:
    valid = {
        "report_id": "x-1",
        "platform": "chirp",
        "reported_at": "2025-06-01T10:00:00Z",
        "category": "harassment",
        "offender": {"account": "someone"},
        "victim": {"account": "else", "region": "kent"},
    }
    makers: list[Callable[[], bytes]] = [
        lambda: b"{this is not json",
        lambda: b"\xff\xfe\x00garbage",
        lambda: b"[1, 2, 3]",
        lambda: orjson.dumps({k: v for k, v in valid.items() if k != "offender"}),
        lambda: orjson.dumps(valid | {"reported_at": "last tuesday"}),
        lambda: orjson.dumps(valid | {"reported_at": "2025-06-01T10:00:00"}),
        lambda: orjson.dumps(valid | {"category": "spam"}),
        lambda: orjson.dumps(valid | {"platform": "Chirp App"}),
        lambda: orjson.dumps(valid | {"victim": {"account": "else", "region": 44}}),
        lambda: orjson.dumps(valid | {"text": "x" * 5000}),
        lambda: b"x" * (70 * 1024),
    ]
    return [makers[i % len(makers)]() for i in range(count)]


def simulate(out: Path, seed: int, scale: int) -> dict[str, Any]:
    """Write `reports.jsonl` and `truth.json` into `out`; returns the truth."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    simulation = _Generator(seed, scale).build()
    out.mkdir(parents=True, exist_ok=True)
    (out / "reports.jsonl").write_bytes(b"".join(line + b"\n" for line in simulation.lines))
    (out / "truth.json").write_bytes(orjson.dumps(simulation.truth, option=orjson.OPT_INDENT_2))
    return simulation.truth
