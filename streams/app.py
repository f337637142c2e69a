"""The one Faust app: topics, agents and web pages, built from Settings in one place."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import CrashingSupervisor
from prometheus_client import CONTENT_TYPE_LATEST

from agents.graph import GraphStage, make_graph_agent
from agents.intake import make_intake
from agents.replay import PartitionedState, Produced
from agents.resolve import ResolveStage, make_resolve_agent
from agents.webhooks import make_webhooks
from graph import compiled
from graph.contract import partition_key
from graph.lifecycle import AlertBook
from streams import memory
from streams.api import Api
from streams.journal import IntakeJournal
from streams.kafka import MAX_MESSAGE_BYTES, create_topics, partition_count
from streams.keys import KeyRing
from streams.metrics import Metrics
from streams.settings import Settings
from streams.shared import Directory, Followed
from streams.transport import LinkwatchApp, restart_in_place

__all__ = ["build_app"]

log = logging.getLogger(__name__)

ANNOUNCE_EVERY = 3.0
MAX_POLL_RECORDS = 2000

# Faust's defaults (30 s joins, 110 s restarts after a kill) are made for big clusters;
# these give 5-6 s joins here and are still safe on Apache Kafka.
SESSION_TIMEOUT = 10.0
# aiohttp takes the charset apart from the content type.
PROMETHEUS_CONTENT_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)
HEARTBEAT_INTERVAL = 1.0
# Trailing expiry's pause between slices while it is behind, and between checks when not.
EXPIRY_PAUSE = 0.02
EXPIRY_IDLE = 1.0


def build_app(
    settings: Settings,
    *,
    console: Callable[[dict[str, Any]], None] | None = None,
    demo: Sequence[bytes] = (),
) -> faust.App:
    """The worker. `console` is called with each alert on the alerts topic (all-in-one mode);
    `demo` messages are pushed to the reports topic once the worker runs."""
    if not compiled():
        log.warning("the stateful core runs interpreted, about a quarter slower: `make compile`")
    app = LinkwatchApp(
        settings.namespace,
        broker=f"kafka://{settings.bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=SESSION_TIMEOUT,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL,
        broker_rebalance_timeout=SESSION_TIMEOUT,
        stream_recovery_delay=0.0,
        producer_acks=-1,
        # Deliberately at-least-once: exactly-once needs broker transactions, which the
        # embedded broker lacks; linkwatch is idempotent instead (README, "Reliability").
        processing_guarantee="at_least_once",
        # Each fetched batch is one event (streams/transport.py): a few in flight per agent
        # are plenty, and a small buffer is what makes backpressure reach the fetcher.
        broker_max_poll_records=MAX_POLL_RECORDS,
        stream_buffer_maxsize=16,
        producer_max_batch_size=1024 * 1024,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        producer_linger_ms=5,
    )
    app.idempotent_producer = settings.idempotent_producer
    app.raw_topics = frozenset({settings.reports_topic})  # intake reads the bytes itself
    metrics = Metrics()

    # Where this worker's own sends to a stateful topic are handed off (`local_handoff`).
    handoff: dict[str, PartitionedState[Any]] = {}

    async def send(*args: Any) -> Any:
        delivery: Any = await app.producer.send(*args)  # an asyncio future of aiokafka's
        state = handoff.get(args[0])
        if state is not None:
            delivery.add_done_callback(partial(_hand_off, state, args[1], args[2]))
        return delivery

    topics = {
        name: app.topic(name, partitions=partition_count(settings, name))
        for name in settings.topics
    }
    resolve = ResolveStage(settings, metrics, send, on_lost=restart_in_place)
    graph = GraphStage(settings, metrics, send)
    # An agent that fails stops the worker: its batch was not acked, so a restart resumes
    # from the committed offsets and loses nothing. (Faust's default restarts the agent
    # alone, past the failed batch, and the commit then stalls behind it.)
    agent = partial(app.agent, supervisor_strategy=CrashingSupervisor)
    agent(topics[settings.reports_topic], name="intake")(make_intake(settings, metrics, send))
    agent(topics[settings.identity_topic], name="resolve")(make_resolve_agent(resolve))
    agent(topics[settings.actor_reports_topic], name="graph")(make_graph_agent(graph))
    stateful = (resolve.partitions, graph.partitions)
    if settings.local_handoff:
        handoff.update((state.topic, state) for state in stateful)

        def fetch_rarely(topic: str, partition: int) -> bool:
            state = handoff.get(topic)
            return state is not None and state.handing_off(partition)

        app.fetch_rarely = fetch_rarely  # streams/transport.py, item 6

    async def expire_trailing() -> None:
        """Expiry and retention that trail the watermark, a slice per turn: after a jump in
        event time they never hold up the loop for long, and memory comes back even when
        no more reports arrive (`RollingGraph.expire_some`, `AliasResolver.forget_some`)."""
        while True:
            behind = [await resolve.expire_some(), graph.expire_some()]
            await asyncio.sleep(EXPIRY_PAUSE if any(behind) else EXPIRY_IDLE)

    app.task(expire_trailing)

    async def start_resolver() -> None:
        """The resolver process starts with the worker, not when the group gives this worker
        the identity partition: it is ready by then, and ready for a failover."""
        resolve.state.start()

    app.task(start_resolver)

    rebuilds: set[asyncio.Future[None]] = set()

    async def rebuild(state: PartitionedState[Any], partitions: list[int]) -> None:
        """Rebuild assigned partitions now. A rebalance dropped their state: a graph partition
        that receives nothing new would stay empty for snapshots and actors, and a state that
        is not there yet takes no hand-off (`PartitionedState.offer`)."""
        offsets = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=settings.namespace,  # Faust's consumer group is the app id
            enable_auto_commit=False,
        )
        try:
            await offsets.start()
            for partition in partitions:
                tp = TopicPartition(state.topic, partition)
                await state.rebuild(partition, await offsets.committed(tp) or 0)
        except Exception:
            log.exception("rebuilding %s partitions %s failed", state.topic, partitions)
        finally:
            await offsets.stop()

    # Faust signals call receivers as (sender, *args, signal=..., **kwargs).
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for state in stateful:
            partitions = sorted(tp.partition for tp in args[0] if tp.topic == state.topic)
            state.assign(partitions)
            if partitions:
                future = asyncio.ensure_future(rebuild(state, partitions))
                rebuilds.add(future)  # a reference, so the task is not collected mid-way
                future.add_done_callback(rebuilds.discard)

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for state in stateful:
            state.revoke(tp.partition for tp in args[0] if tp.topic == state.topic)

    async def ensure_topics(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Create the topics that are missing. A broker that lost everything (the embedded
        one keeps nothing across a restart) no longer knows this worker's group member, so
        the group rejoins, revoking first: the topics are back before any agent runs
        again. Without them the first report fails its send to the identity topic, and
        with it the worker."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, create_topics, settings)
        except Exception as exc:  # the broker may still be away; the next rebalance retries
            log.warning("could not check the topics: %r", exc)

    app.on_partitions_revoked.connect(ensure_topics)
    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)

    keys, book = KeyRing(), AlertBook()
    directory = Directory(worker_id=uuid.uuid4().hex[:12])

    def on_alert(alert: dict[str, Any]) -> None:
        book.add_alert(alert)
        if console is not None:  # all-in-one mode prints each alert as the book takes it
            console(alert)

    followed = [
        Followed(settings.bootstrap, settings.keys_topic, keys.apply),
        Followed(settings.bootstrap, settings.alerts_topic, on_alert),
        Followed(settings.bootstrap, settings.alert_events_topic, book.apply_event),
        Followed(settings.bootstrap, settings.workers_topic, directory.apply),
    ]
    for follower in followed:
        app.task(follower.run)
    journal = IntakeJournal(settings.data_dir / f"{settings.namespace}-intake.sqlite3")
    Api(
        settings=settings,
        metrics=metrics,
        send=send,
        keys=keys,
        book=book,
        journal=journal,
        directory=directory,
        graphs=graph.graphs,
        owned=lambda: graph.partitions.owned,
        served=lambda: graph.partitions.served,
        ready=lambda: all(follower.ready.is_set() for follower in followed),
    ).register(app)

    async def announce() -> None:
        """Tell the other workers where this one is and which graph partitions it holds."""
        record = {
            "worker_id": directory.worker_id,
            "url": settings.own_url,
            "partitions": sorted(graph.partitions.owned),
            "at": time.time(),
        }
        try:
            await (await send(settings.workers_topic, None, orjson.dumps(record), 0, None, None))
        except Exception as exc:  # the next announcement comes in a few seconds
            log.warning("could not announce this worker: %r", exc)

    async def prune_journal() -> None:
        journal.prune(time.time() - settings.window_seconds)

    app.timer(ANNOUNCE_EVERY)(announce)

    async def freeze_survivors() -> None:
        memory.freeze()

    app.timer(memory.FREEZE_EVERY)(freeze_survivors)
    app.timer(3600.0)(prune_journal)

    if settings.webhooks:
        agent(topics[settings.alerts_topic], name="webhooks")(make_webhooks(settings, metrics))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        consumer: Any = app.consumer
        metrics.lag.clear()  # partitions revoked in a rebalance must not keep a frozen lag
        for tp in consumer.assignment():
            read, end = consumer._read_offset.get(tp), consumer.highwater(tp)
            if end is None:
                continue  # not fetched from since the assignment: no end known yet
            behind = end - (read + 1 if read is not None else 0)
            metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, behind))
        return web.bytes(metrics.exposition(), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "partitions": sorted(graph.partitions.owned),
                "resolver": bool(resolve.partitions.owned),
            }
        )

    if demo:
        messages = list(demo)

        async def push_demo() -> None:
            for raw in messages:
                key = partition_key(raw)
                await app.producer.send(settings.reports_topic, key, raw, None, None, None)
            await app.producer.flush()

        app.task(push_demo)

    return app


def _hand_off(
    state: PartitionedState[Any], key: bytes | None, value: bytes | None, delivery: Any
) -> None:
    """Offer a message this worker produced to its state once Kafka has acknowledged it."""
    if not delivery.cancelled() and delivery.exception() is None:
        sent = delivery.result()  # aiokafka's RecordMetadata
        state.offer(Produced(key, value, sent.offset, sent.timestamp), sent.partition)
