"""The `linkwatch` command: broker, topics, worker, run, push, alerts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka.errors import KafkaConnectionError
from kafka.errors import KafkaError

from streams.broker import BrokerError, EmbeddedBroker, broker_answers
from streams.keys import ROLES
from streams.push import PushResult, push_file, push_messages
from streams.settings import Settings, SettingsError

__all__ = ["main"]

log = logging.getLogger("linkwatch")

# Seconds a worker asked to stop (SIGTERM, Ctrl-C) has to do so before it exits at once.
# Faust's stop waits on the broker (the consumer's commit and leave, the producer's flush),
# so a worker whose broker had gone was still running 120 s after SIGTERM (session 16), and
# only a SIGKILL ended it. Exiting is safe: what it had not committed is read again
# (at-least-once; README, "Reliability"). Under Kubernetes it comes before the pod's
# grace period (deploy/k8s: 60 s) ends in a SIGKILL.
STOP_DEADLINE = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] in (["worker"], ["run"]):
        from streams.memory import tune_collector, use_system_allocator

        use_system_allocator()  # see streams/memory.py: so that expiry returns memory
        tune_collector()  # and so that the garbage collector does not take a third
    parser = _parser()
    args = parser.parse_args(argv)
    # The worker configures its own logging; the other commands only need the client
    # libraries quiet (their errors are reported here, in one sentence).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        settings = Settings.from_env().with_overrides(
            **{flag: getattr(args, flag, None) for flag in _SETTING_FLAGS}
        )
        result: int = args.command(settings, args)
        return result
    except (SettingsError, BrokerError, LookupError) as exc:
        print(f"linkwatch: {exc}", file=sys.stderr)
        return 2
    except (KafkaConnectionError, KafkaError):
        print(
            f"linkwatch: no Kafka broker answers at {settings.bootstrap} "
            "(start one with `linkwatch broker`, or set LINKWATCH_BOOTSTRAP)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


_SETTING_FLAGS = frozenset(
    {"bootstrap", "web_port", "data_dir", "partitions", "min_regions", "window_days", "namespace"}
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration (flags override LINKWATCH_* variables)")
    group.add_argument("--bootstrap", help="Kafka bootstrap address [LINKWATCH_BOOTSTRAP]")
    group.add_argument("--web-port", type=int, help="worker web port [LINKWATCH_WEB_PORT]")
    group.add_argument("--data-dir", type=Path, help="worker state dir [LINKWATCH_DATA_DIR]")
    group.add_argument("--partitions", type=int, help="partitions per topic [LINKWATCH_PARTITIONS]")
    group.add_argument("--min-regions", type=int, help="regions that raise an alert")
    group.add_argument("--window-days", type=float, help="rolling window in days")
    group.add_argument("--namespace", help="topic prefix and consumer group [LINKWATCH_NAMESPACE]")

    parser = argparse.ArgumentParser(
        prog="linkwatch",
        description="Joins abuse reports up as they arrive and alerts when one actor "
        "reaches victims in several regions.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    broker = commands.add_parser(
        "broker", parents=[common], help="run the embedded broker (Tansu) in the foreground"
    )
    broker.add_argument("--port", type=int, default=None, help="port (default: bootstrap's)")
    broker.set_defaults(command=_broker)

    topics = commands.add_parser("topics", parents=[common], help="create the topics")
    topics.set_defaults(command=_topics)

    worker = commands.add_parser("worker", parents=[common], help="run one Faust worker")
    worker.add_argument("--loglevel", default="info", choices=["crit", "error", "warn", "info"])
    worker.set_defaults(command=_worker)

    run = commands.add_parser(
        "run", parents=[common], help="all in one: broker if needed, topics, worker, alerts"
    )
    run.add_argument("--demo", action="store_true", help="replay the demo case")
    run.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])
    run.set_defaults(command=_run)

    push = commands.add_parser(
        "push",
        parents=[common],
        help="send a JSONL file of reports",
        description="Send each non-blank line of a JSONL file to the reports topic, as it is, "
        "acknowledged by all in-sync replicas. Bad lines are sent too (the pipeline rejects "
        "them where they can be seen); lines of 1 MiB or more cannot be and count as failed. "
        "Pushing the same file again is safe, and is the recovery after a failed push or a "
        "broker that lost its data: the pipeline drops a (platform, report_id) it has seen, "
        "and alert ids are deterministic.",
    )
    push.add_argument("file", type=Path)
    push.add_argument(
        "--rate",
        type=_positive_rate,
        metavar="N",
        help="at most N lines a second (default: no cap)",
    )
    push.set_defaults(command=_push)

    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="re-send the reports the HTTP intake accepted (after a broker lost them)",
        description="Re-send to the reports topic every report body the HTTP intake accepted, "
        "from the intake journals (NAMESPACE-intake.sqlite3) under the data dir, in the order "
        "they were accepted. The embedded broker keeps nothing across a restart; the journals "
        "do. Replaying is safe: the pipeline drops a (platform, report_id) it has seen, and "
        "alert ids are deterministic, so nothing is counted or alerted twice. Reports pushed "
        "from files are not journaled: push the same file again.",
    )
    since = replay.add_mutually_exclusive_group(required=True)
    since.add_argument(
        "--since",
        type=_aware_time,
        metavar="ISO8601",
        help="only reports accepted at or after this time (with Z or an offset)",
    )
    since.add_argument("--all", action="store_true", help="every report the journals hold")
    replay.add_argument(
        "--rate", type=_positive_rate, metavar="N", help="at most N reports a second"
    )
    replay.set_defaults(command=_replay)

    sim = commands.add_parser(
        "simulate",
        parents=[common],
        help="write a synthetic stream with ground truth (reports.jsonl, truth.json)",
    )
    sim.add_argument("out", type=Path, help="output directory")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scale", type=int, default=1, help="1 is about 600 lines")
    sim.set_defaults(command=_simulate)

    keys = commands.add_parser("keys", help="API keys: create, list, revoke")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", parents=[common], help="mint a key")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--platform", help="the one platform a platform key reports for")
    create.add_argument("--name", help="who holds it (shown in alert histories and the audit)")
    create.set_defaults(command=_keys_create)
    listing = key_commands.add_parser("list", parents=[common], help="list keys (no secrets)")
    listing.set_defaults(command=_keys_list)
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_keys_revoke)

    erase = commands.add_parser(
        "erase",
        parents=[common],
        help="erase one person's data from the graph, the alias state and snapshots",
        description="Removes an account's reports as an offender and as a victim from every "
        "worker's graph and alias state, by a record on the identity topic that every "
        "rebuild replays too. The reports topic (the intake) keeps what was sent until its "
        "retention; alerts already raised are not rewritten.",
    )
    erase.add_argument("--platform", required=True)
    erase.add_argument("--account", required=True, help="the account as the platform names it")
    erase.set_defaults(command=_erase)

    snap = commands.add_parser("snapshot", help="download a graph snapshot through the API")
    snap.add_argument("--format", default="json", choices=["json", "graphml", "gexf"])
    snap.add_argument("-o", "--output", type=Path, required=True)
    snap.add_argument("--url", help="a worker's URL (default: this machine's web port)")
    snap.add_argument("--key", help="an analyst or admin key [LINKWATCH_API_KEY]")
    snap.add_argument("--region")
    snap.add_argument("--since", help="RFC 3339: edges last seen at or after this")
    snap.add_argument(
        "--min-regions",
        dest="min_regions_filter",
        type=int,
        help="only actors whose victims are in at least this many regions",
    )
    snap.set_defaults(command=_snapshot)

    alerts = commands.add_parser("alerts", parents=[common], help="print the alerts")
    alerts.add_argument("--follow", action="store_true", help="keep waiting for new alerts")
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    alerts.set_defaults(command=_alerts)
    return parser


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    port = args.port or int(settings.bootstrap.rpartition(":")[2])
    broker = EmbeddedBroker(port).start()
    print(f"linkwatch: embedded broker (Tansu, memory only) on {broker.bootstrap}", flush=True)
    try:
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import create_topics, partition_count

    created = create_topics(settings)
    for name in settings.topics:
        state = "created" if name in created else "exists"
        print(f"{name}: {state} ({partition_count(settings, name)} partitions)")
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import build_app
    from streams.kafka import create_topics

    create_topics(settings)  # idempotent; a worker never waits on a topic nobody created
    _start_worker(build_app(settings), args.loglevel)
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import build_app
    from streams.demo import demo_reports
    from streams.kafka import create_topics

    broker = None
    if not broker_answers(settings.bootstrap):
        host, _, port = settings.bootstrap.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            raise BrokerError(f"no broker answers at {settings.bootstrap}")
        broker = EmbeddedBroker(int(port), log=settings.data_dir / "broker.log")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        broker.start()
        print(f"linkwatch: started the embedded broker on {broker.bootstrap}", flush=True)
    try:
        create_topics(settings)
        app = build_app(
            settings,
            console=lambda alert: _print_alert(alert, sys.stdout),
            demo=demo_reports() if args.demo else (),
        )
        print(
            f"linkwatch: worker starting; alerts appear below; metrics on "
            f"http://{settings.web_host}:{settings.web_port}/metrics; Ctrl-C stops",
            flush=True,
        )
        _start_worker(app, args.loglevel, broker.stop if broker is not None else None)
    finally:
        if broker is not None:
            broker.stop()
            print("linkwatch: embedded broker stopped", flush=True)
    return 0


def _start_worker(
    app: Any, loglevel: str, before_giving_up: Callable[[], object] | None = None
) -> None:
    """Run the worker until it is stopped; `before_giving_up` runs if a stop takes past
    STOP_DEADLINE, before the process exits (`linkwatch run` stops its embedded broker)."""
    from faust.worker import Worker

    class _Worker(Worker):
        """Faust's worker, which exits at once if a signal's stop takes past STOP_DEADLINE."""

        async def _stop_on_signal(self, signal: Any) -> None:
            timer = threading.Timer(STOP_DEADLINE, _give_up_stopping, [before_giving_up])
            timer.daemon = True
            timer.start()
            try:
                await super()._stop_on_signal(signal)
            finally:
                timer.cancel()

    worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    if not sys.stdout.isatty():
        worker.spinner = None  # its cursor codes only clutter a log file or a pipe
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


def _give_up_stopping(before: Callable[[], object] | None) -> None:
    log.error(
        "the worker did not stop within %.0f s of being asked to (is the broker gone?): "
        "exiting now; what it had not committed will be read again",
        STOP_DEADLINE,
    )
    try:
        if before is not None:
            before()
    finally:
        logging.shutdown()
        os._exit(1)


def _push(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"linkwatch: no such file: {path}", file=sys.stderr)
        return 2
    progress = _Progress(path.stat().st_size, sys.stderr)
    result = push_file(settings, path, rate=args.rate, progress=progress.advance)
    progress.finish(result.sent)
    skipped = f", skipped {result.blank} blank lines" if result.blank else ""
    return _pushed(result, f"sent {result.sent} reports to {settings.reports_topic}{skipped}")


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from streams.journal import IntakeJournal

    name = f"{settings.namespace}-intake.sqlite3"
    paths = sorted(settings.data_dir.rglob(name)) if settings.data_dir.is_dir() else []
    if not paths:
        print(f"linkwatch: no intake journal ({name}) under {settings.data_dir}", file=sys.stderr)
        return 2
    since = None if args.all else args.since.timestamp()
    journals = [IntakeJournal(path) for path in paths]
    try:
        bodies = (body for journal in journals for body in journal.bodies(since))
        result = push_messages(settings, bodies, rate=args.rate)
    finally:
        for journal in journals:
            journal.close()
    journaled = f"{len(paths)} intake journal" + ("s" if len(paths) > 1 else "")
    return _pushed(
        result, f"re-sent {result.sent} reports from {journaled} to {settings.reports_topic}"
    )


def _pushed(result: PushResult, summary: str) -> int:
    """Print what was sent; every report that was not is counted, and fails the command."""
    print(summary)
    if result.failed:
        print(
            f"linkwatch: {result.failed} reports were not delivered: " + "; ".join(result.errors),
            file=sys.stderr,
        )
        return 1
    return 0


def _positive_rate(text: str) -> float:
    rate = float(text)
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError("must be a number more than 0")
    return rate


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs Z or a UTC offset")
    return moment


class _Progress:
    """A one-line progress bar on a terminal; silent when stderr is a file or a pipe."""

    def __init__(self, total_bytes: int, out: TextIO) -> None:
        self.total = max(total_bytes, 1)
        self.out = out
        self.started = self.shown = time.monotonic()
        self.enabled = out.isatty()

    def advance(self, done: int, lines: int) -> None:
        """Called with the bytes and the lines read so far."""
        now = time.monotonic()
        if self.enabled and now - self.shown > 0.2:
            self.shown = now
            fraction = done / self.total
            bar = "#" * int(fraction * 30)
            rate = lines / max(now - self.started, 1e-9)
            self.out.write(f"\r[{bar:<30}] {fraction:4.0%} {lines:,} lines {rate:,.0f}/s")
            self.out.flush()

    def finish(self, sent: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.enabled:
            self.out.write("\n")
        self.out.write(f"{sent:,} reports in {elapsed:.1f}s ({sent / elapsed:,.0f}/s)\n")
        self.out.flush()


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from streams.simulate import simulate

    truth = simulate(args.out, args.seed, args.scale)
    kinds: dict[str, int] = {}
    for person in truth["people"].values():
        kinds[person["kind"]] = kinds.get(person["kind"], 0) + 1
    print(
        f"wrote {truth['lines']} lines to {args.out / 'reports.jsonl'} "
        f"({truth['duplicate_lines']} redelivered, {truth['malformed_lines']} malformed) "
        f"and the truth to {args.out / 'truth.json'}: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    )
    return 0


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from streams.keys import mint_key

    try:
        key, record = mint_key(args.role, args.platform, args.name)
    except ValueError as error:
        print(f"linkwatch: {error}", file=sys.stderr)
        return 2
    _publish(settings, settings.keys_topic, record)
    print(f"created {args.role} key {record['key_id']}"
          + (f" for platform {args.platform}" if args.platform else "")
          + "; it is shown once, store it now:")  # fmt: skip
    print(key)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from streams.keys import KeyRing

    ring = KeyRing()
    for record in _read_all(settings, settings.keys_topic):
        ring.apply(record)
    print(f"{'key id':<10} {'role':<10} {'platform':<12} {'created':<20} {'revoked':<20} name")
    for record in ring.records():
        revoked = record.get("revoked_at")
        print(
            f"{record['key_id']:<10} {record['role']:<10} {record.get('platform') or '-':<12} "
            f"{_when(record['created_at']):<20} {_when(revoked) if revoked else '-':<20} "
            f"{record.get('name') or ''}"
        )
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from streams.keys import KeyRing

    ring = KeyRing()
    for record in _read_all(settings, settings.keys_topic):
        ring.apply(record)
    if args.key_id not in {record["key_id"] for record in ring.records()}:
        print(f"linkwatch: no key {args.key_id}", file=sys.stderr)
        return 2
    _publish(settings, settings.keys_topic, {"key_id": args.key_id, "revoked_at": time.time()})
    print(f"revoked key {args.key_id}; every worker refuses it within a second")
    return 0


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    from graph.contract import PLATFORM_PATTERN

    if not PLATFORM_PATTERN.fullmatch(args.platform) or not 0 < len(args.account) <= 256:
        print("linkwatch: --platform must be a platform name (a-z, 0-9, _ . -) and "
              "--account 1 to 256 characters", file=sys.stderr)  # fmt: skip
        return 2
    pseudonyms = settings.pseudonyms()
    offender = f"{args.platform}:{pseudonyms.offender(args.account)}"
    victim = f"{args.platform}:{pseudonyms.victim(args.platform, args.account)}"
    erasure = {"erase": {"offender": offender, "victim": victim}}
    # A pack of one entry on the identity topic: the resolver applies it in stream order.
    _publish(settings, settings.identity_topic, [erasure])
    _publish(settings, settings.audit_topic, {
        "at": time.time(), "key_id": None, "name": "linkwatch erase", "role": "admin",
        "action": "erase", "target": f"{offender} {victim}", "status": 202, "worker": None,
    })  # fmt: skip
    print(f"erasure queued for {offender} (as an offender) and {victim} (as a victim)")
    return 0


def _publish(settings: Settings, topic: str, record: Any) -> None:
    from kafka import KafkaProducer

    from streams.kafka import create_topics

    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(topic, value=orjson.dumps(record), partition=0).get(timeout=30)
    producer.close()


def _read_all(settings: Settings, topic: str) -> list[dict[str, Any]]:
    from streams.kafka import read_partitions

    async def collect() -> list[dict[str, Any]]:
        return [
            orjson.loads(record.value)
            async for records in read_partitions(settings.bootstrap, topic)
            for record in records
        ]

    return asyncio.run(collect())


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(seconds)))


def _snapshot(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    key = args.key or os.environ.get("LINKWATCH_API_KEY")
    if not key:
        print("linkwatch: pass --key or set LINKWATCH_API_KEY (analyst or admin)", file=sys.stderr)
        return 2
    query = {"format": args.format, "region": args.region, "since": args.since,
             "min_regions": args.min_regions_filter}  # fmt: skip
    url = (args.url or f"http://127.0.0.1:{settings.web_port}") + "/v1/graph/snapshot?"
    url += urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        print(f"linkwatch: HTTP {error.code}: {error.read().decode(errors='replace')}",
              file=sys.stderr)  # fmt: skip
        return 1
    except urllib.error.URLError as error:
        print(f"linkwatch: cannot reach {url}: {error.reason}", file=sys.stderr)
        return 1
    args.output.write_bytes(data)
    print(f"wrote a {args.format} snapshot ({len(data):,} bytes) to {args.output}")
    return 0


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import read_partitions

    async def read() -> None:
        async for records in read_partitions(
            settings.bootstrap, settings.alerts_topic, follow=args.follow
        ):
            for record in records:
                alert = orjson.loads(record.value)
                if args.json:
                    sys.stdout.write(record.value.decode() + "\n")
                else:
                    _print_alert(alert, sys.stdout)
            sys.stdout.flush()

    asyncio.run(read())
    return 0


def _print_alert(alert: dict[str, Any], out: TextIO) -> None:
    kind = alert.get("kind", "serial").upper()
    lines = [
        f"\n{kind} ALERT {alert['alert_id']}  level {alert['level']}: "
        f"victims in {len(alert['regions'])} regions ({', '.join(alert['regions'])})",
        f"  {alert['reason']}",
        f"  accounts:   {', '.join(alert['accounts'])}",
    ]
    lines += [
        f"  linked:     {' & '.join(link['accounts'])} (shared {link['signal']})"
        for link in alert.get("links", ())
    ]
    lines += [
        f"  categories: {', '.join(alert['categories'])}",
        f"  reports:    {', '.join(alert['report_ids'])}",
        f"  first seen {alert['first_seen']}, last seen {alert['last_seen']}, "
        f"raised {alert['raised_at']}",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
