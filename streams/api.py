"""The HTTP API on the worker's web server (docs/api.md): intake, alerts, actors, snapshots."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import networkx as nx
import orjson
from faust.web import View

from agents.replay import Send
from graph import snapshot
from graph.contract import MAX_TEXT_CHARS, Rejection, partition_key, report_from_document
from graph.identity import Pseudonyms
from graph.lifecycle import ACTIONS, AlertBook, LifecycleError, UnknownAlert
from graph.rules import format_time
from graph.window import RollingGraph
from streams.journal import IntakeJournal
from streams.kafka import actor_partition
from streams.keys import KeyRing, Principal, RateLimit
from streams.metrics import Metrics
from streams.settings import Settings
from streams.shared import Directory

__all__ = ["MAX_BODY_BYTES", "MAX_NOTE", "MAX_REPORTS", "Api", "ApiError"]

MAX_BODY_BYTES = 1024 * 1024
# A lifecycle note is held to a report's text limit: every worker keeps it with the alert
# for as long as it runs, and the event must fit the alert-events topic's 1 MB.
MAX_NOTE = MAX_TEXT_CHARS
MAX_REPORTS = 1000
MAX_HOPS = 4
CONSOLE = Path(__file__).parent / "console"
FORWARDED = "X-Linkwatch-Forwarded"

# Who may call what (docs/api.md, "Authentication and roles").
EVERYONE = frozenset({"platform", "responder", "analyst", "admin"})
INTAKE = frozenset({"platform", "admin"})
READ_ALERTS = frozenset({"responder", "analyst", "admin"})
ACT_ON_ALERTS = frozenset({"responder", "admin"})
READ_ACTORS = frozenset({"responder", "analyst", "admin"})
SNAPSHOTS = frozenset({"analyst", "admin"})
# Opening an offender's pseudonym (a snapshot's `platform:o_...`): each call is audited.
RESOLVE_PSEUDONYMS = frozenset({"responder", "admin"})

# An endpoint: (request, caller, **path parameters) -> (body, status)
Handler = Callable[..., Awaitable[tuple[Any, int]]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Api:
    """Everything the views need; one per worker."""

    settings: Settings
    metrics: Metrics
    send: Send
    keys: KeyRing
    book: AlertBook
    journal: IntakeJournal
    directory: Directory
    graphs: Callable[[], list[RollingGraph]]
    owned: Callable[[], set[int]]
    served: Callable[[], set[int]]  # owned and rebuilt
    ready: Callable[[], bool]
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    pseudonyms: Pseudonyms = field(init=False)
    limit: RateLimit = field(init=False)

    def __post_init__(self) -> None:
        self.pseudonyms = self.settings.pseudonyms()
        self.limit = RateLimit(self.settings.api_rate)

    # -- plumbing shared by the views -------------------------------------------------

    def authenticate(self, request: Any, roles: frozenset[str]) -> Principal:
        if not self.ready():
            raise ApiError(503, "this worker is still reading its shared state; retry shortly")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        principal = self.keys.authenticate(token.strip())
        if principal is None:
            raise ApiError(401, "unknown or revoked API key")
        if principal.role not in roles:
            raise ApiError(403, f"the {principal.role} role may not call this endpoint")
        wait = self.limit.wait(principal.key_id, time.monotonic())
        if wait > 0:
            raise ApiError(
                429,
                f"over {self.settings.api_rate:g} requests a second for this key; retry later",
                retry_after_s=round(wait, 3),
            )
        return principal

    def respond(self, view: View, body: Any, status: int = 200) -> Any:
        return view.bytes(orjson.dumps(body), content_type="application/json", status=status)

    async def audit(self, who: Principal, action: str, target: str, status: int) -> None:
        entry = {
            "at": time.time(),
            "key_id": who.key_id,
            "name": who.name,
            "role": who.role,
            "action": action,
            "target": target,
            "status": status,
            "worker": self.directory.worker_id,
        }
        await (await self.send(self.settings.audit_topic, None, orjson.dumps(entry), 0, None, None))

    def handler(
        self, roles: frozenset[str], action: str
    ) -> Callable[[Handler], Callable[..., Awaitable[Any]]]:
        """Wrap a view method: authenticate, call, audit, and turn ApiError into JSON."""

        def decorate(method: Handler) -> Callable[..., Any]:
            async def run(view: View, request: Any, **kwargs: Any) -> Any:
                who: Principal | None = None
                try:
                    who = self.authenticate(request, roles)
                    body, status = await method(request, who, **kwargs)
                except ApiError as error:
                    body, status = {"error": error.message, **error.extra}, error.status
                self.metrics.api.labels(endpoint=action, status=str(status)).inc()
                if who is not None and action != "whoami":
                    await self.audit(who, f"{request.method} {action}", request.path_qs, status)
                if status == 429:
                    retry = str(max(1, round(body.get("retry_after_s", 1))))
                    return view.bytes(orjson.dumps(body), content_type="application/json",
                                      status=status, headers={"Retry-After": retry})  # fmt: skip
                if isinstance(body, _Raw):
                    return view.bytes(body.data, content_type=body.content_type, status=status,
                                      headers=body.headers)  # fmt: skip
                return self.respond(view, body, status)

            return run

        return decorate

    # -- intake --------------------------------------------------------------------------

    async def post_reports(self, request: Any, who: Principal) -> tuple[Any, int]:
        items = _decode_array(await _read_body(request))
        checked: list[tuple[int, dict[str, Any] | None, Any]] = []
        for index, item in enumerate(items):
            raw = orjson.dumps(item)
            report = (
                report_from_document(item, raw)
                if isinstance(item, dict)
                else Rejection("not_object", f"item {index} is not a JSON object", raw)
            )
            if not isinstance(report, Rejection) and who.platform not in (None, report.platform):
                raise ApiError(
                    403,
                    f"this key reports for {who.platform}; item {index} claims {report.platform}",
                )
            checked.append((index, item if isinstance(item, dict) else None, report))
        keys = [(r.platform, r.report_id) for _, _, r in checked if not isinstance(r, Rejection)]
        seen = self.journal.known(keys)
        results, accepted, deliveries = [], [], []
        for index, item, report in checked:
            if isinstance(report, Rejection):
                self.metrics.reject(report.reason)
                report_id = item.get("report_id") if item else None
                results.append(
                    {"index": index, "report_id": report_id if isinstance(report_id, str) else None,
                     "status": "rejected", "reason": report.reason, "detail": report.detail}
                )  # fmt: skip
                continue
            key = (report.platform, report.report_id)
            if key in seen:
                results.append(
                    {"index": index, "report_id": report.report_id, "status": "duplicate"}
                )
                continue
            seen.add(key)
            body = report.to_json()
            deliveries.append(
                await self.send(self.settings.reports_topic, partition_key(body), body, None,
                                None, None)
            )  # fmt: skip
            accepted.append((report.platform, report.report_id, body))
            results.append({"index": index, "report_id": report.report_id, "status": "accepted"})
        for delivery in deliveries:  # in Kafka, acked, before the answer goes out
            await delivery
        self.journal.record(accepted)
        counts = {status: sum(r["status"] == status for r in results)
                  for status in ("accepted", "duplicate", "rejected")}  # fmt: skip
        body = {"accepted": counts["accepted"], "duplicates": counts["duplicate"],
                "rejected": counts["rejected"], "results": results}  # fmt: skip
        return body, 202

    # -- alerts --------------------------------------------------------------------------

    async def get_alerts(self, request: Any, who: Principal) -> tuple[Any, int]:
        query = request.query
        try:
            limit = min(1000, max(1, int(query.get("limit", "200"))))
        except ValueError:
            raise ApiError(400, "limit must be a whole number") from None
        alerts, total = self.book.query(
            states=_csv(query.get("state")),
            regions=_csv(query.get("region")),
            platforms=_csv(query.get("platform")),
            kinds=_csv(query.get("kind")),
            limit=limit,
        )
        return {"alerts": alerts, "total": total}, 200

    async def get_alert(self, request: Any, who: Principal, alert_id: str) -> tuple[Any, int]:
        try:
            return self.book.view(alert_id), 200
        except UnknownAlert:
            raise ApiError(404, f"no alert {alert_id}") from None

    async def act_on_alert(
        self, request: Any, who: Principal, alert_id: str, action: str
    ) -> tuple[Any, int]:
        if action not in ACTIONS:
            raise ApiError(404, f"no action {action}; use one of {', '.join(ACTIONS)}")
        body = await _read_body(request)
        try:
            document = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise ApiError(400, "the body is not JSON") from None
        note = document.get("note") if isinstance(document, dict) else None
        if note is not None and not isinstance(note, str):
            raise ApiError(400, "note must be a string")
        if note is not None and len(note) > MAX_NOTE:
            raise ApiError(400, f"note must be at most {MAX_NOTE} characters")
        if action == "dismiss" and not (note or "").strip():
            raise ApiError(400, "dismissing an alert needs a note saying why")
        try:
            self.book.next_state(alert_id, action)
        except UnknownAlert:
            raise ApiError(404, f"no alert {alert_id}") from None
        except LifecycleError as error:
            raise ApiError(409, str(error)) from None
        event = {
            "event_id": uuid.uuid4().hex,
            "alert_id": alert_id,
            "action": action,
            "by": who.label,
            "at": format_time(time.time()),
            "note": note,
        }
        await (
            await self.send(self.settings.alert_events_topic, alert_id.encode(),
                            orjson.dumps(event), 0, None, None)
        )  # fmt: skip
        self.book.apply_event(event)  # the follower reads it back too; the id makes it once
        return self.book.view(alert_id), 200

    # -- actors and snapshots ------------------------------------------------------------

    async def resolve_pseudonym(
        self, request: Any, who: Principal, pseudonym: str
    ) -> tuple[Any, int]:
        """The platform's own account behind an offender's pseudonym (`platform:o_...`)."""
        opened = self.pseudonyms.reveal(pseudonym)
        if opened == pseudonym:
            raise ApiError(
                404,
                "not an offender pseudonym of this deployment's key; victim (v_) and signal "
                "(s_) pseudonyms are one-way and cannot be resolved",
            )
        return {"pseudonym": pseudonym, "account": opened}, 200

    async def get_actor(self, request: Any, who: Principal, actor_id: str) -> tuple[Any, int]:
        forwarded = await self._forward_to_owner(request, actor_id)
        if forwarded is not None:
            return forwarded
        for graph in self.graphs():
            detail = snapshot.actor_detail(graph, actor_id, self.pseudonyms.reveal)
            if detail is not None:
                if "merged_into" not in detail:
                    detail["alerts"] = self.book.for_actor(actor_id)
                return detail, 200
        raise ApiError(404, f"no actor {actor_id} in the window")

    async def get_actor_graph(self, request: Any, who: Principal, actor_id: str) -> tuple[Any, int]:
        try:
            hops = int(request.query.get("hops", "1"))
        except ValueError:
            raise ApiError(400, "hops must be a whole number") from None
        if not 1 <= hops <= MAX_HOPS:
            raise ApiError(400, f"hops must be 1 to {MAX_HOPS}")
        if hops == 1:
            forwarded = await self._forward_to_owner(request, actor_id)
            if forwarded is not None:
                return forwarded
            G = self._local_graph()
        else:
            G = await self._whole_graph(request)
        neighbourhood = snapshot.neighbourhood(G, actor_id, hops)
        if not neighbourhood:
            raise ApiError(404, f"no actor {actor_id} in the window")
        return nx.node_link_data(neighbourhood, edges="edges"), 200

    async def get_snapshot(self, request: Any, who: Principal) -> tuple[Any, int]:
        query = request.query
        fmt = query.get("format", "json")
        if fmt not in snapshot.FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(snapshot.FORMATS)}")
        G = await self._whole_graph(request)
        data = snapshot.render(G, fmt)
        headers = {"Content-Disposition": f'attachment; filename="linkwatch-snapshot.{fmt}"'}
        return _Raw(data, snapshot.FORMATS[fmt], headers), 200

    async def get_local_part(self, request: Any, who: Principal) -> tuple[Any, int]:
        """This worker's part of a snapshot, asked for by another worker."""
        return nx.node_link_data(self._filtered(self._local_graph(), request), edges="edges"), 200

    def _local_graph(self) -> nx.DiGraph:
        """This worker's partitions; refused while one of them is still being rebuilt, so a
        snapshot is never silently missing part of the graph."""
        rebuilding = self.owned() - self.served()
        if rebuilding:
            raise ApiError(503, f"{len(rebuilding)} graph partition(s) are being rebuilt "
                                "on this worker; retry shortly")  # fmt: skip
        levels: dict[str, int] = {}
        for alert in self.book.query(kinds=("serial",), limit=1_000_000)[0]:
            actor = alert["actor_id"]
            levels[actor] = max(levels.get(actor, 0), int(alert["level"]))
        return snapshot.to_networkx(self.graphs(), levels)

    def _filtered(self, G: nx.DiGraph, request: Any) -> nx.DiGraph:
        query = request.query
        try:
            since = (
                datetime.fromisoformat(query["since"].replace("Z", "+00:00"))
                if "since" in query
                else None
            )
            min_regions = int(query["min_regions"]) if "min_regions" in query else None
        except ValueError:
            raise ApiError(400, "since must be RFC 3339 and min_regions a whole number") from None
        if since is not None and since.tzinfo is None:
            raise ApiError(400, "since needs a UTC offset or Z")
        return snapshot.filtered(G, query.get("region"), since, min_regions)

    async def _whole_graph(self, request: Any) -> nx.DiGraph:
        """Every live worker's part, composed (this worker's own part without a round trip)."""
        parts = [self._filtered(self._local_graph(), request)]
        if request.headers.get(FORWARDED):
            return parts[0]
        others = [w for w in self.directory.live() if w["worker_id"] != self.directory.worker_id]
        covered = self.owned().union(*(w["partitions"] for w in others))
        unserved = set(range(self.settings.partitions)) - covered
        if unserved:  # a worker is starting, or left and its partitions are not reassigned yet
            total = self.settings.partitions
            raise ApiError(503, f"{len(unserved)} of {total} graph partitions have no worker "
                                "serving them yet; retry shortly")  # fmt: skip
        for worker in others:
            status, body = await self._call(worker["url"], "/v1/internal/graph", request)
            if status != 200:
                raise ApiError(
                    503, f"worker {worker['worker_id']} did not answer ({status}); retry"
                )
            parts.append(snapshot.from_node_link(orjson.loads(body)))
        return nx.compose_all(parts)

    async def _forward_to_owner(self, request: Any, actor_id: str) -> tuple[Any, int] | None:
        """None when this worker owns the actor's partition; else the owner's answer."""
        partition = actor_partition(actor_id, self.settings.partitions)
        if partition in self.owned():
            return None
        owner = self.directory.owner(partition)
        if owner is None or request.headers.get(FORWARDED):
            raise ApiError(503, "the worker owning this actor is not known yet; retry shortly")
        status, body = await self._call(owner["url"], request.path, request)
        return orjson.loads(body), status

    async def _call(self, base_url: str, path: str, request: Any) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {"Authorization": request.headers.get("Authorization", ""), FORWARDED: "1"}
        try:
            async with self._session.get(
                f"{base_url}{path}", params=request.query, headers=headers
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return 503, orjson.dumps({"error": "another worker did not answer; retry"})

    # -- registration -----------------------------------------------------------------

    def register(self, app: Any) -> None:
        api = self

        @app.page("/")
        class Console(View):
            async def get(self, request: Any) -> Any:
                return self.bytes((CONSOLE / "index.html").read_bytes(),
                                  content_type="text/html")  # fmt: skip

        app.web.add_static("/console/", CONSOLE)

        @app.page("/v1/whoami")
        class WhoAmI(View):
            @api.handler(EVERYONE, "whoami")
            async def get(request: Any, who: Principal) -> tuple[Any, int]:
                return {"key_id": who.key_id, "name": who.name, "role": who.role,
                        "platform": who.platform}, 200  # fmt: skip

        # path, HTTP method, roles allowed, the action's name in metrics and the audit, handler
        routes: list[tuple[str, str, frozenset[str], str, Handler]] = [
            ("/v1/reports", "post", INTAKE, "reports", self.post_reports),
            ("/v1/alerts", "get", READ_ALERTS, "alerts", self.get_alerts),
            ("/v1/alerts/{alert_id}", "get", READ_ALERTS, "alert", self.get_alert),
            ("/v1/alerts/{alert_id}/{action}", "post", ACT_ON_ALERTS, "alert-action",
             self.act_on_alert),
            ("/v1/actors/{actor_id}", "get", READ_ACTORS, "actor", self.get_actor),
            ("/v1/actors/{actor_id}/graph", "get", READ_ACTORS, "actor-graph",
             self.get_actor_graph),
            ("/v1/graph/snapshot", "get", SNAPSHOTS, "snapshot", self.get_snapshot),
            ("/v1/internal/graph", "get", READ_ACTORS, "internal-graph", self.get_local_part),
            ("/v1/pseudonyms/{pseudonym}", "get", RESOLVE_PSEUDONYMS, "resolve-pseudonym",
             self.resolve_pseudonym),
        ]  # fmt: skip
        for path, method, roles, action, handler in routes:
            view = type(f"{action.title().replace('-', '')}View", (View,),
                        {method: self.handler(roles, action)(handler)})  # fmt: skip
            app.page(path)(view)


@dataclass(frozen=True, slots=True)
class _Raw:
    data: bytes
    content_type: str
    headers: dict[str, str]


async def _read_body(request: Any) -> bytes:
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_array(body: bytes) -> list[Any]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"the body is not JSON: {error}") from None
    if not isinstance(items, list):
        raise ApiError(400, "the body must be a JSON array of reports")
    if not 1 <= len(items) <= MAX_REPORTS:
        raise ApiError(400, f"send 1 to {MAX_REPORTS} reports at a time, not {len(items)}")
    return items


def _csv(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]
