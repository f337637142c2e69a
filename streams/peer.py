"""The Quix Streams baseline for `make bench`: the same per-actor distinct-region rule.

Run as its own process (`python -m streams.peer BOOTSTRAP TOPIC COUNT`). It reads the
reports topic, drops what is not a report object, groups by offender account (a repartition
through Kafka, as linkwatch's own), keeps each actor's distinct regions in Quix's RocksDB
state, and flags an actor at three. It prints the rate from its first message to its
COUNT-th as JSON. It is a baseline, not linkwatch: no aliases, window or episodes.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from typing import Any

import orjson
from quixstreams import Application, State


def main(argv: list[str]) -> int:
    bootstrap, topic_name, count = argv[0], argv[1], int(argv[2])
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"peer-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="bytes", key_deserializer="bytes")
    seen = {"n": 0, "first": 0.0, "alerts": 0}

    def parse(value: bytes) -> Any:
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
        if seen["n"] >= count:
            app.stop()
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        ok = isinstance(document, dict) and isinstance(document.get("offender"), dict)
        return document if ok and isinstance(document.get("victim"), dict) else None

    def regions(document: dict[str, Any], state: State[Any, Any]) -> bool:
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
    elapsed = time.perf_counter() - seen["first"]
    print(orjson.dumps({"per_s": seen["n"] / elapsed, "messages": seen["n"],
                        "actors_flagged": seen["alerts"]}).decode())  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
