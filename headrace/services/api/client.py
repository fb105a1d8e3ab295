"""A small synchronous client of the query API (httpx), for the CLI and for tests and tools.

The base URL is ``HEADRACE_API_URL`` (default ``http://127.0.0.1:8080``). Every
failure becomes a :class:`~headrace.errors.HeadraceError`: the API's own
error (its code and message) when it answered with one, ``HR-API-001`` when it
could not be reached. Tenants, run ids and approval ids go into paths
percent-encoded, so an id with ``/`` in it reaches its own resource.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api.config import ApiSettings


class ApiClient:
    """``GET``/``POST`` against one API base URL."""

    def __init__(self, url: str | None = None, *, timeout: float = 75.0) -> None:
        self.url = (url or ApiSettings().url).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise HeadraceError(
                ErrorCode.API_UNAVAILABLE,
                f"cannot reach the query API at {self.url} ({type(exc).__name__}: {exc}) — "
                "is `headrace serve api` running, and is HEADRACE_API_URL right?",
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict) and "code" in err:
                try:
                    code = ErrorCode.from_code(str(err["code"]))
                except KeyError:
                    code = ErrorCode.API_UNAVAILABLE
                raise HeadraceError(code, str(err.get("message")))
            if response.status_code == 404 and path.startswith(("/runs/", "/approvals/")):
                what = "run" if path.startswith("/runs/") else "approval"
                raise HeadraceError(
                    ErrorCode.RUN_NOT_FOUND if what == "run" else ErrorCode.APPROVAL_NOT_FOUND,
                    f"{what} not found: {method} {self.url}{path} answered HTTP 404",
                )
            raise HeadraceError(
                ErrorCode.API_UNAVAILABLE,
                f"{method} {self.url}{path} answered HTTP {response.status_code}: "
                f"{response.text[:300]}",
            )
        return body

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: _param(v) for k, v in params.items() if v is not None}
        return self._call("GET", path, params=clean)

    # -- reads --------------------------------------------------------------------

    def runs(self, *, limit: int | None = None, page: int = 500, **filters: Any) -> Iterator[dict]:
        """Every run the filters select (``type``, ``tenant``, ``status``, ``filter``,
        ``fresh``...), page by page; at most ``limit``."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page if limit is None else min(page, limit - seen)
            if size <= 0:
                return
            body = self.get("/runs", limit=size, cursor=cursor, **filters)
            for run in body["runs"]:
                yield run
                seen += 1
            cursor = body.get("next")
            if not cursor:
                return
            filters.pop("fresh", None)  # the first page waited already

    def run(self, tenant: str, run_id: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.get(run_path(tenant, run_id), **params)
        return result

    def run_stats(self, *, type: str | None = None, tenant: str | None = None, **kw: Any) -> Any:
        return self.get("/stats/runs", type=type, tenant=tenant, **kw)

    def approvals(
        self, *, limit: int | None = None, page: int = 500, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Approval records the filters select (``status`` — default pending, ``all`` —,
        ``assignee``, ``role``, ``tenant``, ``fresh``), page by page; at most ``limit``."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page if limit is None else min(page, limit - seen)
            if size <= 0:
                return
            body = self.get("/approvals", limit=size, cursor=cursor, **filters)
            for record in body["approvals"]:
                yield record
                seen += 1
            cursor = body.get("next")
            if not cursor:
                return
            filters.pop("fresh", None)

    def approval(self, approval_id: str, tenant: str | None = None, **params: Any) -> Any:
        """One approval record (``HR-RUN-002`` when the views have none with this id)."""
        return self.get(f"/approvals/{_segment(approval_id)}", tenant=tenant, **params)

    def sla_report(self, **params: Any) -> dict[str, Any]:
        """``GET /stats/sla`` (``type``, ``since``, ``until``, ``open``, ``fresh``)."""
        result: dict[str, Any] = self.get("/stats/sla", **params)
        return result

    def position(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/position", **params)
        return result

    def wait_covers(self, offsets: dict[int, int], *, timeout: float = 10.0) -> dict[str, Any]:
        """Return once the views reflect ``events`` up to ``offsets`` (partition → offset,
        e.g. what a producer got back); ``HR-API-003`` if they do not within ``timeout``."""
        wanted = ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))
        return self.position(min_offsets=wanted or None, timeout=f"{timeout}s")

    def wait_current(self, *, timeout: float = 10.0) -> dict[str, Any]:
        """Return once the views reflect everything in ``events`` as of now."""
        return self.position(fresh=True, timeout=f"{timeout}s")

    # -- writes -------------------------------------------------------------------

    def control(
        self, op: str, tenant: str, run_id: str, *, reason: str, actor: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if actor is not None:
            body["actor"] = actor
        path = f"{run_path(tenant, run_id)}/{_segment(op)}"
        result: dict[str, Any] = self._call("POST", path, json=body)
        return result

    # -- waiting ------------------------------------------------------------------

    def wait_run(
        self, tenant: str, run_id: str, cond: Any, *, timeout: float = 60.0, interval: float = 0.2
    ) -> dict[str, Any] | None:
        """Poll the run's view until ``cond(view)``; the view, or None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                view = self.run(tenant, run_id)
            except HeadraceError as exc:
                if exc.code is not ErrorCode.RUN_NOT_FOUND:
                    raise
                view = None
            if view is not None and cond(view):
                return view
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)


def _segment(value: str) -> str:
    """One path segment: everything but unreserved characters percent-encoded (``/`` too)."""
    return quote(value, safe="")


def run_path(tenant: str, run_id: str) -> str:
    """``/runs/{tenant}/{run_id}``, each part one segment whatever it holds."""
    return f"/runs/{_segment(tenant)}/{_segment(run_id)}"


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    return value
