"""Broadcast: one signal to every live run of a workflow type, found through the query API.

The targets are the runs the API lists as ``running`` or ``suspended`` (a
suspended run still records signals) for the type — and the tenant, when the
broadcast names one — whose input passes the broadcast's jq ``filter``
(``.`` is the run input; ``$run`` is ``{id, tenant, type, version}``), as of
the moment the broadcast is handled (the first page asks the API for views
that reflect all of ``events`` so far: ``fresh=true``). Each gets
a ``DeliverSignal`` without a wait id: the run takes it if one of its
``wait_signal`` steps waits for that name, and ignores it otherwise — a
broadcast is not buffered for runs that wait later. The command id is
``<signal id>/<tenant>/<run id>``, so a broadcast handled twice (a redelivery)
yields the same commands, which the orchestrator applies once.

API pages: ``GET {HEADRACE_API_URL}/runs?type=&tenant=&status=running,suspended
&cursor=&limit=`` → ``{"runs": [{tenant, run_id, type, version, status, input,
...}], "next": cursor | null}``. An unreachable API (connection error, timeout,
5xx) is retried with backoff for ``HEADRACE_SIGNAL_BROADCAST_GIVE_UP``; then, or
at once on a 4xx, the broadcast goes to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from headrace.core.envelope import Command, CommandType
from headrace.core.expr import Context, Expression, compile_expr
from headrace.core.outbox import Outgoing, command_message
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api.config import ApiSettings
from headrace.services.signals.config import SignalSettings
from headrace.services.signals.messages import BroadcastOp
from headrace.topology import Routing

log = logging.getLogger("headrace.signals")

STATUSES = ("running", "suspended")


class Broadcaster:
    """Turns a :class:`BroadcastOp` into the ``DeliverSignal`` commands of its targets."""

    def __init__(
        self,
        config: SignalSettings,
        routing: Routing,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.routing = routing
        self.clock = clock
        self.url = (config.api_url or ApiSettings().url).rstrip("/")
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def commands(self, op: BroadcastOp, now: int) -> list[Outgoing]:
        """The commands for every target of ``op`` (raises ``HeadraceError`` for the DLQ)."""
        out = []
        for tenant, run_id in await self.targets(op):
            command = Command(
                command_id=f"{op.signal_id}/{tenant}/{run_id}",
                tenant=tenant,
                run_id=run_id,
                type=CommandType.DeliverSignal,
                time=now,
                payload={"signal": op.signal, "data": op.data, "signal_id": op.signal_id},
                causation_id=op.signal_id,
                traceparent=op.traceparent,
            )
            out.append(command_message(command, self.routing))
        return out

    async def targets(self, op: BroadcastOp) -> list[tuple[str, str]]:
        """``(tenant, run_id)`` of every run ``op`` reaches, each once, in API order."""
        expr = self._filter(op)
        seen: set[tuple[str, str]] = set()
        out: list[tuple[str, str]] = []
        async for run in self._pages(op):
            key = (str(run.get("tenant")), str(run.get("run_id")))
            if key in seen or not self._wanted(op, run, expr):
                continue
            seen.add(key)
            out.append(key)
        return out

    @staticmethod
    def _filter(op: BroadcastOp) -> Expression | None:
        if op.filter is None:
            return None
        try:
            return compile_expr(op.filter)
        except HeadraceError as exc:
            raise HeadraceError(
                ErrorCode.EXPRESSION_INVALID,
                f"broadcast {op.signal_id}: filter {op.filter!r} does not compile: {exc.message}",
            ) from None

    @staticmethod
    def _wanted(op: BroadcastOp, run: dict[str, Any], expr: Expression | None) -> bool:
        # The API filters already; checking again costs little and keeps a lax API harmless.
        if run.get("type") != op.type or run.get("status") not in STATUSES:
            return False
        if op.tenant is not None and run.get("tenant") != op.tenant:
            return False
        if expr is None:
            return True
        ctx = Context(
            input=run.get("input"),
            run={
                "id": run.get("run_id"),
                "tenant": run.get("tenant"),
                "type": run.get("type"),
                "version": run.get("version"),
            },
        )
        try:
            return expr.test(run.get("input"), ctx)
        except HeadraceError as exc:
            log.warning(
                "broadcast filter failed on a run; it is not a target",
                extra={"signal_id": op.signal_id, "run": run.get("run_id"), "error": exc.message},
            )
            return False

    async def _pages(self, op: BroadcastOp) -> Any:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {
                "type": op.type,
                "status": ",".join(STATUSES),
                "limit": self.config.broadcast_page,
            }
            if op.tenant is not None:
                params["tenant"] = op.tenant
            if cursor is None:
                params["fresh"] = "true"
            else:
                params["cursor"] = cursor
            page = await self._get(self.url + "/runs", params, op)
            runs = page.get("runs") if isinstance(page, dict) else None
            if not isinstance(runs, list):
                raise HeadraceError(
                    ErrorCode.API_UNAVAILABLE,
                    f"broadcast {op.signal_id}: {self.url}/runs did not answer "
                    '{"runs": [...], "next": ...} — is HEADRACE_API_URL the query API?',
                )
            for run in runs:
                if isinstance(run, dict):
                    yield run
            cursor = page.get("next")
            if not cursor:
                return

    async def _get(self, url: str, params: dict[str, Any], op: BroadcastOp) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.config.api_timeout)
        deadline = self.clock() + self.config.broadcast_give_up / 1000
        delay = 0.2
        while True:
            try:
                response = await self._client.get(url, params=params)
                if response.status_code < 400:
                    return response.json()
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code < 500:
                    raise HeadraceError(
                        ErrorCode.API_UNAVAILABLE,
                        f"broadcast {op.signal_id}: the API refused GET {url} ({problem})",
                        retryable=False,
                    )
            except (httpx.TransportError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if self.clock() + delay > deadline:
                raise HeadraceError(
                    ErrorCode.API_UNAVAILABLE,
                    f"broadcast {op.signal_id}: the API at {url} did not answer for "
                    f"{self.config.broadcast_give_up / 1000:.0f} s ({problem}) — check "
                    "HEADRACE_API_URL and the api service, then redrive it from the DLQ",
                )
            log.warning("query API unavailable, retrying", extra={"url": url, "error": problem})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
