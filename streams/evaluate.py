"""`make eval`: detection quality of the real pipeline on simulated streams with ground truth.

For each seed and scale it simulates a stream. It then runs linkwatch end to end: an
embedded broker, a worker process, `linkwatch push` and `linkwatch alerts --json`. Finally
it scores the alerts against the truth:

- recall: serial actors with at least one correct serial alert;
- precision: serial alerts whose accounts all belong to one true serial actor;
- impure merges: alerts of any kind whose accounts belong to more than one person;
- brigades: brigade targets flagged as brigades, and serial alerts raised on them;
- detection delay: the actor's reports processed after the report that completed its third
  region (for an ideal detector that sees the same reports in the same order, linked only
  by their signals) and before the alert, counted from the alert's own report ids;
- malformed lines rejected, against malformed lines present.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from graph.contract import Report, parse_report
from graph.pipeline import Pipeline
from graph.watermark import LowWatermark
from streams.broker import EmbeddedBroker
from streams.kafka import create_topics, read_partitions
from streams.settings import Settings
from streams.simulate import simulate

__all__ = ["score"]

TARGETS = {"recall": 1.0, "precision": 0.98, "impure_merges": 0, "max_delay": 0}


def score(
    truth: dict[str, Any],
    alerts: list[dict[str, Any]],
    processed: list[bytes],
    rejected: int,
    settings: Settings,
) -> dict[str, Any]:
    """Score alerts against the truth; `processed` is the valid reports in processing order."""
    # The alerts topic has several partitions: reading it is not raise order.
    alerts = sorted(alerts, key=lambda alert: str(alert["raised_at"]))
    people = truth["people"]
    person_of = {account: person for person, p in people.items() for account in p["accounts"]}
    serial_people = {person for person, p in people.items() if p["kind"] == "serial"}
    brigade_targets = {person for person, p in people.items() if p["kind"] == "brigade_target"}

    serial_alerts = [alert for alert in alerts if alert.get("kind", "serial") == "serial"]
    impure = [alert for alert in alerts if len({person_of[a] for a in alert["accounts"]}) > 1]
    first_correct: dict[str, dict[str, Any]] = {}
    correct = 0
    for alert in serial_alerts:
        persons = {person_of[account] for account in alert["accounts"]}
        if len(persons) == 1 and (person := persons.pop()) in serial_people:
            correct += 1
            first_correct.setdefault(person, alert)
    brigades_flagged = {
        person_of[alert["accounts"][0]] for alert in alerts if alert.get("kind") == "brigade"
    } & brigade_targets
    serial_on_brigades = [
        alert
        for alert in serial_alerts
        if {person_of[a] for a in alert["accounts"]} & brigade_targets
    ]

    delays = _delays(truth, first_correct, serial_alerts, processed, settings)
    return {
        "seed": truth["seed"],
        "scale": truth["scale"],
        "lines": truth["lines"],
        "serial_actors": len(serial_people),
        "detected": len(first_correct),
        "recall": round(len(first_correct) / len(serial_people), 4) if serial_people else 1.0,
        "serial_alerts": len(serial_alerts),
        "precision": round(correct / len(serial_alerts), 4) if serial_alerts else 1.0,
        "impure_merges": len(impure),
        "brigades_flagged": f"{len(brigades_flagged)}/{len(brigade_targets)}",
        "serial_alerts_on_brigades": len(serial_on_brigades),
        "max_delay": max(delays.values(), default=0),
        "mean_delay": round(sum(delays.values()) / len(delays), 3) if delays else 0.0,
        "malformed_rejected": f"{rejected}/{truth['malformed_lines']}",
    }


def _delays(
    truth: dict[str, Any],
    first_alerts: dict[str, dict[str, Any]],
    alerts: list[dict[str, Any]],
    processed: list[bytes],
    settings: Settings,
) -> dict[str, int]:
    """Per detected serial actor: its reports after the completing one, up to its alert.

    The alert compared is the one the ideal detector raises first, found by its id (ids are
    deterministic). Partitions run at their own pace, so the wall-clock first alert of a
    person whose aliases sit on two partitions can be a later one in stream order.
    """
    by_id = {alert["alert_id"]: alert for alert in alerts}
    report_person = truth["report_person"]
    # Per person, its reports in processing order, each with the stream's watermark then:
    # the window is judged against the newest event anywhere, for the ideal detector too.
    by_person: dict[str, list[tuple[str, bytes, float]]] = {}
    seen: set[str] = set()
    stream = LowWatermark(settings.partitions)  # the resolver's own, over the same order
    for raw in processed:
        report = parse_report(raw)
        assert isinstance(report, Report)
        where = orjson.loads(raw)
        watermark = stream.observe(int(where.get("_p", 0)), report.event_time,
                                   int(where.get("_o", -1)))  # fmt: skip
        key = f"{report.platform}:{report.report_id}"
        if key not in seen:  # a redelivered duplicate is not a new report
            seen.add(key)
            by_person.setdefault(report_person[key], []).append((key, raw, watermark))
    delays = {}
    for person, alert in first_alerts.items():
        reports = by_person.get(person, [])
        ideal = Pipeline(
            settings.secret_bytes,
            settings.window_seconds,
            settings.rule(),
            settings.max_accounts_per_signal,
            settings.link_by_text,
            pseudonyms=settings.pseudonyms(),
        )
        completing = len(reports) - 1
        for position, (_, raw, stream_watermark) in enumerate(reports):
            fed = ideal.feed([raw], now=0.0, watermark=stream_watermark)
            raised = [a for a in fed.alerts if a.kind == "serial"]
            if raised:
                completing = position
                alert = by_id.get(raised[0].alert_id, alert)
                break
        in_alert = set(alert["report_ids"])
        last = max(
            (position for position, (key, _, _) in enumerate(reports) if key in in_alert),
            default=0,
        )
        delays[person] = max(0, last - completing)
    return delays


def evaluate_in_process(out: Path, settings: Settings) -> dict[str, Any]:
    """The same scoring with the pure pipeline and no broker (file order is processing order)."""
    truth = orjson.loads((out / "truth.json").read_bytes())
    lines = (out / "reports.jsonl").read_bytes().splitlines()
    pipeline = Pipeline(
        settings.secret_bytes,
        settings.window_seconds,
        settings.rule(),
        settings.max_accounts_per_signal,
        settings.link_by_text,
    )
    run = pipeline.feed(lines, now=0.0)
    valid = [line for line in lines if _is_valid(line)]
    alerts = [alert.to_dict() for alert in run.alerts]
    return score(truth, alerts, valid, len(run.rejections), settings)


def _is_valid(line: bytes) -> bool:
    return isinstance(parse_report(line), Report)


def evaluate_with_broker(out: Path, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Push the stream through a real worker process and score what it raised."""
    truth = orjson.loads((out / "truth.json").read_bytes())
    create_topics(settings)
    env = dict(os.environ) | {
        "LINKWATCH_BOOTSTRAP": settings.bootstrap,
        "LINKWATCH_NAMESPACE": settings.namespace,
        "LINKWATCH_DATA_DIR": str(workdir / settings.namespace),
        "LINKWATCH_WEB_PORT": str(_free_port()),
    }
    cli = [sys.executable, "-m", "streams.cli"]
    log = (workdir / f"{settings.namespace}.log").open("ab")
    worker = subprocess.Popen([*cli, "worker", "--loglevel", "warn"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        subprocess.run([*cli, "push", str(out / "reports.jsonl")], env=env, check=True,
                       capture_output=True)  # fmt: skip
        valid = truth["lines"] - truth["malformed_lines"]
        processed = _resolved(settings, valid, out / "reports.jsonl", timeout=900)
        alerts = _settled_alerts(settings, cli, env)
        rejected = len(_read_all(settings, settings.rejected_topic))
    finally:
        worker.terminate()
        worker.wait(60)
    return score(truth, alerts, processed, rejected, settings)


def _resolved(settings: Settings, count: int, pushed: Path, timeout: float) -> list[bytes]:
    """The valid reports in the order the resolver saw them: the identity topic, unpacked.

    The topic holds them pseudonymised, so each is looked up, by platform and report id, in
    the file that was pushed, and given its input partition and offset (`_p`, `_o`) for the
    watermark."""
    originals: dict[tuple[str, str], dict[str, Any]] = {}
    for line in pushed.read_bytes().splitlines():
        report = parse_report(line)
        if isinstance(report, Report):
            originals.setdefault((report.platform, report.report_id), report.to_document())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports = [
            orjson.dumps(originals[(row[1], row[0])] | {"_p": row[10], "_o": row[11]})
            for pack in _read_all(settings, settings.identity_topic)
            for row in orjson.loads(pack)
        ]
        if len(reports) >= count:
            return reports
        time.sleep(1)
    raise TimeoutError(f"only {len(reports)} of {count} reports reached the resolver")


def _settled_alerts(
    settings: Settings, cli: list[str], env: dict[str, str]
) -> list[dict[str, Any]]:
    """Alerts once nothing new has arrived for a few seconds (merges can trail the input)."""
    previous, quiet_since = -1, time.monotonic()
    while True:
        output = subprocess.run([*cli, "alerts", "--json"], env=env, check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        alerts = [orjson.loads(line) for line in output.splitlines()]
        if len(alerts) != previous:
            previous, quiet_since = len(alerts), time.monotonic()
        elif time.monotonic() - quiet_since > 5:
            return alerts
        time.sleep(1)


def _read_all(settings: Settings, topic: str) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [
            record.value
            async for records in read_partitions(settings.bootstrap, topic)
            for record in records
        ]

    return asyncio.run(collect())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--scales", default="1,4,12")
    parser.add_argument("--no-broker", action="store_true", help="score the pure pipeline only")
    parser.add_argument("--out", type=Path, default=Path("bench/eval.json"))
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="linkwatch-eval-"))
    runs = [(int(seed), int(scale)) for scale in args.scales.split(",")
            for seed in args.seeds.split(",")]  # fmt: skip
    results = []
    broker = None if args.no_broker else EmbeddedBroker(_free_port(), log=workdir / "tansu.log")
    try:
        if broker is not None:
            broker.start()
        for seed, scale in runs:
            out = workdir / f"sim-{seed}-{scale}"
            simulate(out, seed, scale)
            settings = Settings(namespace=f"eval-{seed}-{scale}")
            if broker is None:
                result = evaluate_in_process(out, settings)
            else:
                settings = replace(settings, bootstrap=broker.bootstrap)
                result = evaluate_with_broker(out, settings, workdir)
            results.append(result)
            print(" ".join(f"{key}={value}" for key, value in result.items()), flush=True)
    finally:
        if broker is not None:
            broker.stop()
    failures = [
        f"seed {r['seed']} scale {r['scale']}: {name}={r[name]} (target {target})"
        for r in results
        for name, target in TARGETS.items()
        if (r[name] < target if name in ("recall", "precision") else r[name] > target)
    ]
    failures += [
        f"seed {r['seed']} scale {r['scale']}: malformed lines rejected {r['malformed_rejected']}"
        for r in results
        if len(set(r["malformed_rejected"].split("/"))) != 1
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        "\n"
        + ("all targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
