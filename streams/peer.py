"""The Quix Streams baseline for `make bench`: the same per-actor distinct-region rule.

Run as its own process (`python -m streams.peer BOOTSTRAP TOPIC COUNT BROKER_PID`). It
reads the reports topic, drops what is not a report object, groups by offender account (a
repartition through Kafka, as linkwatch's own), keeps each actor's distinct regions in
Quix's RocksDB state, and flags an actor at three. It is a baseline, not linkwatch: no
aliases, window or episodes.

It prints, as JSON, the rate from its first message read to the last report through its
state, once it has read COUNT messages and every report among them has been through the
state. The group_by puts a Kafka topic between reading and state, so the two stages run
apart: until session 24 the peer stopped at its COUNT-th message read, when about a quarter
of the reports had reached the state, and its rate was that of reading and repartitioning.
`messages`, `reports` and `stated` let the bench check that every report was stated.
`cpu_s` is the CPU its process (all its threads: librdkafka's and RocksDB's too) used over
that stretch, and `broker_cpu_s` the broker's, so that the bench can set
linkwatch's CPU a report beside the peer's from the same run (since session 26).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from typing import Any

import orjson
from quixstreams import Application, State

from streams.procstat import CpuMeter


def main(argv: list[str]) -> int:
    bootstrap, topic_name, count, broker = argv[0], argv[1], int(argv[2]), int(argv[3])
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"peer-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="bytes", key_deserializer="bytes")
    seen = {"n": 0, "reports": 0, "stated": 0, "first": 0.0, "last": 0.0, "alerts": 0,
            "metered": 0}  # fmt: skip
    # Its own CPU, the broker's and the machine's idle time, from its first message read
    # to when it stops.
    meter = CpuMeter({"peer": os.getpid(), "broker": broker})

    def done() -> None:
        if seen["n"] >= count and seen["stated"] >= seen["reports"]:
            if not seen["metered"]:
                meter.stop()
                seen["metered"] = 1
            app.stop()

    def parse(value: bytes) -> Any:
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
            meter.start()
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            document = None
        ok = isinstance(document, dict) and isinstance(document.get("offender"), dict)
        if ok and isinstance(document.get("victim"), dict):
            seen["reports"] += 1
            return document
        done()  # the last message read may be one that is not a report
        return None

    def regions(document: dict[str, Any], state: State[Any, Any]) -> bool:
        seen["stated"] += 1
        seen["last"] = time.perf_counter()
        done()
        known = state.get("regions", [])
        region = document["victim"].get("region")
        if region not in known:
            known.append(region)
            state.set("regions", known)
            if len(known) == 3:
                seen["alerts"] += 1
        return len(known) >= 3

    sdf = app.dataframe(topic)
    sdf = sdf.apply(parse).filter(lambda document: document is not None)
    sdf = sdf.group_by(
        lambda document: f"{document.get('platform')}:{document['offender'].get('account')}",
        name="offender",
    )
    sdf = sdf.apply(regions, stateful=True)
    app.run()
    # To the last report through the state, not to the app's shutdown: the peer's own
    # closing (its final commit, leaving the group) is not counted against it.
    elapsed = seen["last"] - seen["first"]
    print(orjson.dumps({"per_s": seen["n"] / elapsed, "messages": seen["n"],
                        "reports": seen["reports"], "stated": seen["stated"],
                        "actors_flagged": seen["alerts"], "cpu_s": meter.spent["peer"],
                        "broker_cpu_s": meter.spent["broker"],
                        "idle_cores": meter.idle_cores()}).decode())  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
