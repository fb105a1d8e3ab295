"""The query API's HTTP surface (aiohttp): JSON over the views, plus control operations.

Reads that scan the database (lists, statistics, the SLA report) run in the
default thread pool, within scan budgets, so a large one never holds up the
event loop (nor ``/healthz``); :meth:`Api.close_reads` lets the service wait for
them before it closes the database.

Path parameters are percent-decoded: a run id with ``/`` in it is addressed as
``/runs/acme/a%2Fb`` (:class:`~headrace.services.api.client.ApiClient` encodes
them). An unknown route is a JSON ``404`` like every other error.

Every read can be made to wait for its own writes: ``min_offsets=p:o,...``
waits until the views reflect ``events`` up to those offsets, ``fresh=true``
until they reflect everything ``events`` holds at the time of the request,
and on ``GET /runs/{tenant}/{run_id}`` ``min_seq=N`` until the run's view
has reached seq N — each for at most ``timeout`` (default 10 s), then
``504`` with ``HR-API-003``. Errors are ``{"error": {code, message,
retryable}}`` with the headrace code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headrace import control
from headrace.core.durations import parse_duration
from headrace.core.expr import Context, compile_expr
from headrace.core.views import APPROVAL_STATUSES, TERMINAL, run_document
from headrace.errors import ErrorCode, HeadraceError
from headrace.history import as_json, read_run, report_json
from headrace.kafka import make_consumer, make_producer
from headrace.services.api import openapi, queries
from headrace.services.api.indexer import Indexer
from headrace.services.api.params import (
    Handler,
    bad,
    errors,
    flag,
    integer,
    json_response,
    parse_offsets,
    parse_time,
)
from headrace.services.api.sla import Deadlines, sla_report
from headrace.services.api.store import ViewStore
from headrace.settings import Settings

log = logging.getLogger("headrace.api")

DEFAULT_WAIT_S = 10.0
MAX_LIMIT = 1000
READ_THREADS = 4

T = TypeVar("T")


class Api:
    """The HTTP handlers over one store and its indexer."""

    def __init__(self, settings: Settings, store: ViewStore, indexer: Indexer, wait_max: float):
        self.settings = settings
        self.store = store
        self.indexer = indexer
        self.wait_max = wait_max
        self._ends_lock = threading.Lock()
        self._ends_consumer: Consumer | None = None
        self._producer_lock = threading.Lock()
        self._producer: Any = None
        self.deadlines = Deadlines(settings)
        # Scans of the store run here, off the event loop; counted, so that the service
        # can wait for them before it closes the store.
        self._reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="api-read")
        self._reading = 0
        self._idle = threading.Condition()

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the read pool: a scan of the store must not block the loop."""
        with self._idle:
            self._reading += 1
        try:
            job = self._reads.submit(fn, *args)
        except RuntimeError:  # the pool is shut down: the service is stopping
            self._done(None)
            raise HeadraceError(ErrorCode.API_UNAVAILABLE, "the API is stopping") from None
        job.add_done_callback(self._done)  # also when it is cancelled before it ran
        return await asyncio.wrap_future(job)

    def _done(self, _: object) -> None:
        with self._idle:
            self._reading -= 1
            self._idle.notify_all()

    def close_reads(self, timeout: float) -> bool:
        """Take no more reads and wait for those running; False if one still runs."""
        self._reads.shutdown(wait=False, cancel_futures=True)
        with self._idle:
            return self._idle.wait_for(lambda: self._reading == 0, timeout)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors])
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/position", self.position)
        r.add_get("/runs", self.runs)
        r.add_get("/runs/{tenant}/{run_id}", self.run)
        r.add_get("/runs/{tenant}/{run_id}/history", self.history)
        for op in control.Op:
            r.add_post(f"/runs/{{tenant}}/{{run_id}}/{op.value}", self._control_handler(op))
        r.add_get("/approvals", self.approvals)
        r.add_get("/approvals/{approval_id}", self.approval)
        r.add_get("/stats/steps", self.step_stats)
        r.add_get("/stats/runs", self.run_stats)
        r.add_get("/stats/sla", self.sla_stats)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        if self._ends_consumer is not None:
            self._ends_consumer.close()
        if self._producer is not None:
            self._producer.flush(5)
        self.deadlines.stop()

    # -- consistency ---------------------------------------------------------------

    def _timeout(self, request: web.Request) -> float:
        raw = request.query.get("timeout")
        if not raw:
            return min(DEFAULT_WAIT_S, self.wait_max)
        try:
            return min(parse_duration(raw) / 1000, self.wait_max)
        except ValueError as exc:
            raise bad(f"timeout: {exc}") from None

    def event_ends(self) -> dict[int, int]:
        """The current end offset of every ``events`` partition (blocking)."""
        topic = self.settings.topics.events
        with self._ends_lock:
            if self._ends_consumer is None:
                self._ends_consumer = make_consumer(
                    self.settings, f"{self.settings.topic_prefix}api-ends", "headrace-api"
                )
            c = self._ends_consumer
            meta = c.list_topics(topic, timeout=10)
            info = meta.topics.get(topic)
            if info is None or info.error is not None:
                raise HeadraceError(
                    ErrorCode.KAFKA_UNAVAILABLE, f"cannot read the partitions of {topic}"
                )
            return {
                p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in info.partitions
            }

    async def consistent(self, request: web.Request) -> None:
        """Wait as ``min_offsets`` / ``fresh`` ask (see the module docstring)."""
        q = request.query
        targets: dict[int, int] = {}
        if q.get("min_offsets"):
            targets = parse_offsets(q["min_offsets"])
        if flag(q, "fresh"):
            loop = asyncio.get_running_loop()
            for p, o in (await loop.run_in_executor(None, self.event_ends)).items():
                targets[p] = max(targets.get(p, 0), o)
        if targets:
            await self.wait_until(
                lambda: self.indexer.covers(targets),
                self._timeout(request),
                f"events offsets {targets}",
            )

    async def wait_until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.indexer.error is not None:
                raise HeadraceError(
                    ErrorCode.INTERNAL, f"the indexer stopped: {self.indexer.error!r}"
                )
            if time.monotonic() >= deadline:
                raise HeadraceError(
                    ErrorCode.VIEW_BEHIND,
                    f"the views did not reach {what} within {timeout:.1f} s (at "
                    f"{self.indexer.position()}) — retry, or raise `timeout`",
                )
            await asyncio.sleep(0.01)

    # -- service pages ---------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        ok = self.indexer.healthy
        body = {
            "status": "ok" if ok else "failing",
            "indexer": "running" if ok else repr(self.indexer.error or "stopped"),
            "position": {str(p): o for p, o in sorted(self.indexer.position().items())},
        }
        return json_response(body, 200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi.document())

    async def position(self, request: web.Request) -> web.Response:
        await self.consistent(request)
        return json_response(
            {
                "topic": self.settings.topics.events,
                "offsets": {str(p): o for p, o in sorted(self.indexer.position().items())},
                "started_from": {str(p): o for p, o in sorted(self.indexer.started_from.items())},
                "applied_since_start": self.indexer.applied,
            }
        )

    # -- runs --------------------------------------------------------------------------

    async def runs(self, request: web.Request) -> web.Response:
        q = request.query
        await self.consistent(request)
        statuses = queries.parse_statuses(q.get("status"))
        match = self._matcher(q.get("filter"))
        limit = integer(q, "limit", 100, 1, MAX_LIMIT)
        full = flag(q, "full")

        def page() -> queries.Page:
            found = queries.list_runs(
                self.store,
                wtype=q.get("type") or None,
                tenant=q.get("tenant") or None,
                statuses=statuses,
                match=match,
                limit=limit,
                cursor=q.get("cursor"),
                full=full,
            )
            if full:
                found.items = [run_document(v) for v in found.items]
            return found

        found = await self.offload(page)
        return json_response({"runs": found.items, "next": found.next})

    def _matcher(self, src: str | None) -> Callable[[dict[str, Any]], bool] | None:
        if not src:
            return None
        try:
            expr = compile_expr(src)
        except HeadraceError as exc:
            raise bad(f"filter: {exc.message}") from None
        now = int(time.time() * 1000)

        def match(view: dict[str, Any]) -> bool:
            ctx = Context(
                now,
                view["input"],
                {
                    "id": view["run_id"],
                    "tenant": view["tenant"],
                    "type": view["type"],
                    "version": view["version"],
                    "status": view["status"],
                },
            )
            try:
                return expr.test(view["data"], ctx)
            except HeadraceError:
                return False  # a filter that fails on a run's data does not select it

        return match

    def _view(self, tenant: str, run_id: str) -> dict[str, Any]:
        view = self.store.run(tenant, run_id)
        if view is None:
            raise HeadraceError(
                ErrorCode.RUN_NOT_FOUND,
                f"run not found: no run {tenant}/{run_id} in the views (at "
                f"{self.indexer.position()}) — check the tenant and run id; a run started a "
                "moment ago appears with `fresh=true`",
            )
        return view

    async def run(self, request: web.Request) -> web.Response:
        tenant, run_id = request.match_info["tenant"], request.match_info["run_id"]
        await self.consistent(request)
        min_seq = integer(request.query, "min_seq", 0, 0, 2**62)
        if min_seq:

            def reached() -> bool:
                view = self.store.run(tenant, run_id)
                return view is not None and view["last_seq"] >= min_seq

            await self.wait_until(reached, self._timeout(request), f"seq {min_seq}")
        return json_response(run_document(self._view(tenant, run_id)))

    async def history(self, request: web.Request) -> web.Response:
        tenant, run_id = request.match_info["tenant"], request.match_info["run_id"]
        loop = asyncio.get_running_loop()
        log_ = await loop.run_in_executor(None, lambda: read_run(self.settings, tenant, run_id))
        body: dict[str, Any] = {
            "run": {"tenant": tenant, "run_id": run_id},
            "topic": log_.topic,
            "partition": log_.partition,
            "events": [as_json(r) for r in log_.distinct()],
            "duplicates": log_.duplicates,
        }
        if flag(request.query, "verify"):
            body["verify"] = report_json(log_.verify())
        return json_response(body)

    def _control_handler(self, op: control.Op) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            return await self.control(request, op)

        return handle

    async def control(self, request: web.Request, op: control.Op) -> web.Response:
        tenant, run_id = request.match_info["tenant"], request.match_info["run_id"]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise bad('the body must be JSON: {"reason": ..., "actor": ...}') from None
        if not isinstance(body, dict):
            raise bad("the body must be a JSON object {reason, actor?}")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise bad(f'{op.value} needs a reason: {{"reason": "why"}}')
        actor = body.get("actor") or request.headers.get("X-Headrace-Actor") or "api"
        view = self.store.run(tenant, run_id)
        if view is None:  # perhaps just started: look again once the views are current
            loop = asyncio.get_running_loop()
            ends = await loop.run_in_executor(None, self.event_ends)
            await self.wait_until(
                lambda: self.indexer.covers(ends), self._timeout(request), f"events offsets {ends}"
            )
            view = self._view(tenant, run_id)
        if view["status"] in TERMINAL:
            raise HeadraceError(
                ErrorCode.COMMAND_REJECTED,
                f"run {tenant}/{run_id} already ended ({view['status']}); nothing to {op.value}",
            )
        command = control.control_command(
            op, tenant, run_id, actor=str(actor), reason=reason, invocation=control.invocation_id()
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._send, command)
        return json_response(
            {
                "command_id": command.command_id,
                "op": op.value,
                "tenant": tenant,
                "run_id": run_id,
                "status": view["status"],
            },
            202,
        )

    def _send(self, command: Any) -> None:
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, "headrace-api", linger_ms=1)
            control.send(self.settings, [command], producer=self._producer)

    # -- approvals and statistics ---------------------------------------------------------

    async def approvals(self, request: web.Request) -> web.Response:
        q = request.query
        await self.consistent(request)
        raw = q.get("status") or "pending"
        statuses = None if raw == "all" else queries.parse_statuses(raw, APPROVAL_STATUSES, {})
        roles = [r for r in (q.get("role") or "").split(",") if r]
        limit = integer(q, "limit", 100, 1, MAX_LIMIT)
        page = await self.offload(
            lambda: queries.list_approvals(
                self.store,
                statuses=statuses,
                tenant=q.get("tenant") or None,
                assignee=q.get("assignee") or None,
                roles=roles,
                limit=limit,
                cursor=q.get("cursor"),
            )
        )
        return json_response({"approvals": page.items, "next": page.next})

    async def approval(self, request: web.Request) -> web.Response:
        aid = request.match_info["approval_id"]
        await self.consistent(request)
        tenant = request.query.get("tenant") or None
        found = await self.offload(queries.find_approvals, self.store, aid, tenant)
        if not found:
            raise HeadraceError(
                ErrorCode.APPROVAL_NOT_FOUND,
                f"no approval {aid!r} in the views — `headrace approvals list` shows the open "
                "ones; one requested a moment ago appears with `fresh=true`",
            )
        if len(found) > 1:
            tenants = ", ".join(r["tenant"] for r in found)
            raise HeadraceError(
                ErrorCode.COMMAND_REJECTED,
                f"approval id {aid!r} exists in tenants {tenants} — add ?tenant=",
            )
        return json_response(found[0])

    async def step_stats(self, request: web.Request) -> web.Response:
        q = request.query
        await self.consistent(request)
        now = int(time.time() * 1000)
        step = q.get("step") or None
        if step is not None and not q.get("type"):
            raise bad("step needs type (a step name is unique within a workflow type)")
        since = parse_time(q.get("since"), "since", now)
        until = parse_time(q.get("until"), "until", now)
        samples = integer(q, "samples", 0, 0, 10_000)
        steps, truncated = await self.offload(
            lambda: queries.step_stats(
                self.store,
                wtype=q.get("type") or None,
                step=step,
                since=since,
                until=until,
                samples=samples,
            )
        )
        return json_response({"since": since, "steps": steps, "truncated": truncated})

    async def sla_stats(self, request: web.Request) -> web.Response:
        q = request.query
        await self.consistent(request)
        now = int(time.time() * 1000)
        since = parse_time(q.get("since") or "7d", "since", now)
        until = parse_time(q.get("until"), "until", now)
        open_limit = integer(q, "open", 50, 0, 10_000)
        loop = asyncio.get_running_loop()
        deadline = await loop.run_in_executor(None, self.deadlines.resolver)
        body = await self.offload(
            lambda: sla_report(
                self.store,
                wtype=q.get("type") or None,
                since=since,
                until=until,
                now=now,
                open_limit=open_limit,
                deadline=deadline,
            )
        )
        return json_response(body)

    async def run_stats(self, request: web.Request) -> web.Response:
        q = request.query
        await self.consistent(request)
        counts = await self.offload(
            queries.run_counts, self.store, q.get("type") or None, q.get("tenant") or None
        )
        return json_response(counts)
