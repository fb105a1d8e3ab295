"""Make one HTTP call for one task attempt and turn its outcome into a result or a failure.

The connector never retries inside an attempt: a failure is reported at once,
with a code the workflow can ``catch`` on and a retryability the task service
acts on, so retries follow the step's retry policy (attempt count, backoff,
DLQ) like any other task.

| outcome | code | retryable |
| --- | --- | --- |
| 2xx (or a status listed in ``accept``) | — completed | — |
| 5xx | ``http.5xx`` | yes (``retry_after_ms`` from ``Retry-After``) |
| 429 | ``http.429`` | yes (``retry_after_ms`` from ``Retry-After``) |
| 408 | ``http.408`` | yes |
| other 4xx, unfollowed 3xx | ``http.4xx`` / ``http.3xx`` | no |
| no answer within ``timeout`` | ``http.timeout`` | yes |
| cannot connect (refused, DNS, TLS) | ``http.connect`` | yes |
| connection lost mid-exchange | ``http.transport`` | yes |
| host's circuit is open | ``http.circuit_open`` | yes (``retry_after_ms``: cool-down left) |
| URL or header that cannot be sent | ``http.config`` / ``http.template`` | no |

Only what says something about the host counts for its circuit breaker: a
request that cannot be sent (checked before anything is, so bad input never
reaches the network), a wait for a free connection of the connector's own
pool, or a timeout cut short by the attempt's deadline is nobody's fault but
ours, and leaves the host's circuit as it was.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from headrace.connectors.http.auth import auth_headers, ssl_context, tls_key
from headrace.connectors.http.breaker import Breakers
from headrace.connectors.http.config import (
    CompiledCall,
    compile_call,
    header_value_problem,
    url_problem,
)
from headrace.connectors.http.openapi import OpenApiResolver
from headrace.connectors.http.retry_after import parse_retry_after
from headrace.connectors.http.templates import Template
from headrace.core.expr import Context
from headrace.errors import HeadraceError
from headrace.sdk.errors import NonRetryable, Retryable, TaskError

_EXCERPT = 2048


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Failed(Exception):
    """How an exchange failed, and whether that counts against the host's circuit."""

    def __init__(self, failure: TaskError, host_failed: bool) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.host_failed = host_failed


class HttpCaller:
    """Calls HTTP endpoints for tasks: one pooled client per TLS setup, a breaker per host."""

    def __init__(
        self,
        *,
        breakers: Breakers | None = None,
        env: Mapping[str, str] | None = None,
        wall_ms: Callable[[], int] = _wall_ms,
        max_connections: int = 100,
        user_agent: str = "headrace-http-connector",
    ) -> None:
        self.breakers = breakers or Breakers(clock=_monotonic_ms)
        self.env = env
        self.wall_ms = wall_ms
        self.user_agent = user_agent
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._clients: dict[Any, httpx.AsyncClient] = {}
        self.openapi = OpenApiResolver(self._client_for)

    def _client_for(self, key: Any) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(
                verify=ssl_context(key), limits=self._limits, trust_env=False
            )
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def call(
        self,
        config: dict[str, Any],
        input: Any,
        *,
        idempotency_key: str | None,
        time_left_s: float | None = None,
    ) -> Any:
        """The mapped response of the call ``config`` describes; raises Retryable/NonRetryable."""
        call = compile_call(config)
        cfg = call.config
        key = tls_key(cfg, self.env)
        client = self._client_for(key)
        method, url = await self._target(call, input, key)
        headers = {"User-Agent": self.user_agent}
        headers.update(self._headers(call, input))
        headers.update(auth_headers(cfg, self.env))
        if cfg.idempotency_header and idempotency_key:
            problem = header_value_problem(idempotency_key)
            if problem:
                raise NonRetryable(
                    "http.config",
                    f"the task's idempotency key {problem}, so header "
                    f"{cfg.idempotency_header!r} cannot carry it — fix the step's idempotency "
                    "key, or set idempotency_header: null",
                )
            headers[cfg.idempotency_header] = idempotency_key
        params = {
            k: v.expand(input, encode=False, what=f"query {k}") if isinstance(v, Template) else v
            for k, v in call.query.items()
        }
        content = self._body(call, input, headers)
        # A deadline shorter than the call's own timeout is the attempt's, not the host's.
        limit = call.timeout_s if time_left_s is None else min(call.timeout_s, time_left_s)
        capped = limit < call.timeout_s
        timeout = max(0.001, limit)
        host = urlsplit(url).netloc
        where = f"{method} {_redacted(url)}"

        wait_ms = self.breakers.admit(host)
        if wait_ms is not None:
            raise Retryable(
                "http.circuit_open",
                f"{where}: the circuit for {host} is open after repeated failures; not calling "
                "it until the cool-down ends",
                details={"host": host},
                retry_after_ms=wait_ms,
            )
        try:
            status, resp_headers, body = await self._exchange(
                client, method, url, headers, params, content, timeout, capped, cfg, where
            )
        except _Failed as failed:
            if failed.host_failed:
                self.breakers.failed(host)
            else:
                self.breakers.released(host)
            raise failed.failure from None
        except BaseException:
            self.breakers.released(host)
            raise
        if 200 <= status < 300 or status in cfg.accept:
            self.breakers.succeeded(host)
            return self._map_response(call, status, resp_headers, body, input, where)
        failure, healthy = self._status_failure(status, resp_headers, body, where, url, method)
        if healthy is True:
            self.breakers.succeeded(host)
        elif healthy is False:
            self.breakers.failed(host)
        else:
            self.breakers.released(host)
        raise failure

    async def _target(self, call: CompiledCall, input: Any, key: Any) -> tuple[str, str]:
        """Method and URL of the call; a URL that cannot be called fails before any request."""
        cfg = call.config
        if call.url is not None:
            template, what = call.url, "url"
            method = cfg.method
        else:
            assert cfg.openapi is not None
            op = await self.openapi.resolve(cfg.openapi, key)
            template, what = op.url, f"openapi {cfg.openapi.operation} url"
            method = op.method
        url = template.expand(input, what=what)
        problem = url_problem(url)
        if problem:
            from_input = url_problem(_plausible(template)) is None
            raise NonRetryable(
                "http.template" if from_input else "http.config",
                f"{what} {template.source!r}: the URL built "
                + ("from the input " if from_input else "")
                + f"{problem} — "
                + ("fix the step's input mapping" if from_input else "fix the step's config"),
            )
        return method, url

    @staticmethod
    def _headers(call: CompiledCall, input: Any) -> dict[str, str]:
        """The config's headers, filled from the input; the config's own text was checked
        when it was compiled, so a value that cannot be sent is the input's doing."""
        out: dict[str, str] = {}
        for name, template in call.headers.items():
            value = template.expand(input, encode=False, what=f"header {name}").strip(" \t")
            problem = header_value_problem(value)
            if problem:
                raise NonRetryable(
                    "http.template",
                    f"header {name} {template.source!r}: the value built from the input "
                    f"{problem} — fix the step's input mapping",
                )
            out[name] = value
        return out

    @staticmethod
    def _body(call: CompiledCall, input: Any, headers: dict[str, str]) -> bytes | None:
        if call.body is None:
            return None
        try:
            value = call.body.evaluate(input, Context(input=input))
        except HeadraceError as exc:
            raise NonRetryable("http.body_mapping", f"body mapping failed: {exc.message}") from None
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if isinstance(value, str) and content_type and "json" not in content_type.lower():
            return value.encode()
        if content_type is None:
            headers["Content-Type"] = "application/json"
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, Any],
        content: bytes | None,
        timeout: float,
        capped: bool,
        cfg: Any,
        where: str,
    ) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and (capped) body; raises :class:`_Failed`."""
        on_wire: list[str] = []  # httpcore's first trace event: a connection is in hand

        async def trace(event: str, info: dict[str, Any]) -> None:
            if not on_wire:
                on_wire.append(event)

        try:
            # httpx's timeouts bound each read; this bounds the whole exchange, so a
            # server trickling bytes cannot hold an attempt past its timeout.
            async with asyncio.timeout(timeout):
                async with client.stream(
                    method,
                    url,
                    headers=headers,
                    params=params or None,
                    content=content,
                    timeout=httpx.Timeout(timeout),
                    follow_redirects=cfg.follow_redirects,
                    extensions={"trace": trace},
                ) as resp:
                    ok = 200 <= resp.status_code < 300 or resp.status_code in cfg.accept
                    limit = cfg.max_response_bytes if ok else _EXCERPT
                    body = await _read_capped(resp, limit, truncate=not ok, where=where)
                    return resp.status_code, resp.headers, body
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Failed(
                Retryable("http.connect", f"{where}: cannot connect: {exc or type(exc).__name__}"),
                host_failed=True,
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            # Only a wait on the host counts against it: not one for a free connection of
            # our own pool (busy, not broken), nor one cut short by the attempt's deadline.
            if not on_wire:
                waited_for, why = (
                    "connection_pool",
                    " for a free connection of the connector's pool (raise "
                    "HEADRACE_HTTP_MAX_CONNECTIONS, or lower the concurrency)",
                )
            elif capped:
                waited_for, why = (
                    "attempt_deadline",
                    " (all that was left of the attempt's start_to_close)",
                )
            else:
                waited_for, why = "timeout", ""
            raise _Failed(
                Retryable(
                    "http.timeout",
                    f"{where}: no complete answer within {timeout:g}s{why}",
                    details={"timeout_s": timeout, "waited_for": waited_for},
                ),
                host_failed=waited_for == "timeout",
            ) from None
        except ssl.SSLError as exc:
            # With TLS 1.3 a server refusing the client's certificate says so after the
            # handshake, on the first read, which httpx passes on unwrapped.
            raise _Failed(
                Retryable("http.connect", f"{where}: TLS failed: {exc}"), host_failed=True
            ) from None
        except (
            httpx.LocalProtocolError,
            httpx.UnsupportedProtocol,
            httpx.InvalidURL,
            UnicodeEncodeError,
        ) as exc:
            # The request could not be sent as built (the checks before sending missed it):
            # the same request fails the same way, and the host never saw it.
            raise _Failed(
                NonRetryable(
                    "http.config",
                    f"{where}: the request cannot be sent as built: "
                    f"{exc or type(exc).__name__} — check the step's url, headers and body",
                ),
                host_failed=False,
            ) from None
        except httpx.TransportError as exc:
            raise _Failed(
                Retryable(
                    "http.transport",
                    f"{where}: the connection failed mid-exchange: {exc or type(exc).__name__}",
                ),
                host_failed=True,
            ) from None

    def _status_failure(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        where: str,
        url: str,
        method: str,
    ) -> tuple[Retryable | NonRetryable, bool | None]:
        """The failure a non-success status stands for, and what it says of the host's health."""
        details: dict[str, Any] = {
            "status": status,
            "method": method,
            "url": _redacted(url),
            "body": body.decode("utf-8", "replace"),
        }
        retry_after = parse_retry_after(headers.get("retry-after"), self.wall_ms())
        if status >= 500:
            return Retryable(
                "http.5xx",
                f"{where} answered {status}",
                details=details,
                retry_after_ms=retry_after,
            ), False
        if status == 429:
            # "Slow down" says nothing about the host being broken: neither verdict.
            return Retryable(
                "http.429",
                f"{where} answered 429 Too Many Requests",
                details=details,
                retry_after_ms=retry_after,
            ), None
        if status == 408:
            return Retryable(
                "http.408", f"{where} answered 408 Request Timeout", details=details
            ), None
        code = "http.3xx" if status < 400 else "http.4xx"
        # A 4xx proves the host is alive: it resets the breaker's failure count.
        return NonRetryable(
            code, f"{where} answered {status}; retrying will not help", details=details
        ), True

    @staticmethod
    def _map_response(
        call: CompiledCall, status: int, headers: httpx.Headers, body: bytes, input: Any, where: str
    ) -> Any:
        response = {
            "status": status,
            "headers": _header_dict(headers),
            "body": _decode(headers, body),
        }
        if call.response is None:
            return response
        try:
            return call.response.evaluate(response, Context(input=input))
        except HeadraceError as exc:
            raise NonRetryable(
                "http.response_mapping",
                f"{where} succeeded ({status}) but the response mapping failed: {exc.message}",
                details={"status": status},
            ) from None


def _plausible(template: Template) -> str:
    """``template`` filled with harmless values: if that URL is fine, the input broke the real."""
    return "".join(
        part
        if isinstance(part, str)
        else "http://x"
        if part.raw and i == 0  # {+base}/path: the value brings the scheme and host
        else "x"
        for i, part in enumerate(template.parts)
    )


async def _read_capped(resp: httpx.Response, limit: int, *, truncate: bool, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            raise NonRetryable(
                "http.response_too_large",
                f"{where}: the response is larger than max_response_bytes={limit} — raise it "
                "in the step's config or ask for less",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _header_dict(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.multi_items():
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _decode(headers: httpx.Headers, body: bytes) -> Any:
    if not body:
        return None
    text = body.decode(_charset(headers), "replace")
    if "json" in headers.get("content-type", "").lower():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _charset(headers: httpx.Headers) -> str:
    for part in headers.get("content-type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"


def _redacted(url: str) -> str:
    """The URL without query string or user info (they may hold secrets)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
