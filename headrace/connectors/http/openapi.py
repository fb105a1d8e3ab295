"""Resolve an OpenAPI 3 ``operationId`` into a method and a URL template.

A step may name an operation instead of spelling the URL::

    config:
      openapi: {document: https://payments.internal/openapi.json, operation: createCharge}
      body: "{amount: .total}"

The document (JSON or YAML) is fetched once per process and kept; the
operation's path template (``/charges/{orderId}``) uses the same ``{field}``
placeholders as a ``url`` and is filled from the task input. The base URL is
``server`` from the config, else the document's first ``servers`` entry (its
variables at their defaults, relative to the document's own URL), else the
document's origin.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import yaml

from headrace.connectors.http.config import METHODS, OpenApiRef
from headrace.connectors.http.templates import Template, parse_template
from headrace.sdk.errors import NonRetryable, Retryable


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    url: Template


class OpenApiResolver:
    """Fetches OpenAPI documents (once each) and finds operations in them."""

    def __init__(self, client_for: Callable[[Any], httpx.AsyncClient], timeout_s: float = 10.0):
        self._client_for = client_for
        self._timeout_s = timeout_s
        self._documents: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def resolve(self, ref: OpenApiRef, tls_key: Any) -> Operation:
        doc = await self._document(ref.document, tls_key)
        return find_operation(doc, ref)

    async def _document(self, url: str, tls_key: Any) -> dict[str, Any]:
        doc = self._documents.get(url)
        if doc is not None:
            return doc
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            doc = self._documents.get(url)
            if doc is None:
                doc = self._documents[url] = await self._fetch(url, tls_key)
        return doc

    async def _fetch(self, url: str, tls_key: Any) -> dict[str, Any]:
        try:
            resp = await self._client_for(tls_key).get(url, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise Retryable(
                "http.openapi", f"cannot fetch the OpenAPI document {url}: {exc!r}"
            ) from None
        if resp.status_code != 200:
            raise Retryable(
                "http.openapi",
                f"fetching the OpenAPI document {url} answered {resp.status_code}",
                details={"status": resp.status_code},
            )
        try:
            doc = (
                json.loads(resp.text)
                if resp.text.lstrip().startswith("{")
                else yaml.safe_load(resp.text)
            )
        except (ValueError, yaml.YAMLError) as exc:
            raise NonRetryable(
                "http.config", f"OpenAPI document {url} does not parse: {exc}"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
            raise NonRetryable("http.config", f"{url} is not an OpenAPI document (no 'paths')")
        doc.setdefault("x-headrace-url", url)
        return doc


def find_operation(doc: dict[str, Any], ref: OpenApiRef) -> Operation:
    """The method and URL template of ``ref.operation`` in ``doc``."""
    for path, item in doc["paths"].items():
        if not isinstance(item, dict):
            continue
        for method, op in item.items():
            if (
                method.upper() in METHODS
                and isinstance(op, dict)
                and op.get("operationId") == ref.operation
            ):
                base = ref.server or _server(doc)
                try:
                    url = parse_template(base.rstrip("/") + "/" + str(path).lstrip("/"))
                except ValueError as exc:
                    raise NonRetryable("http.config", str(exc)) from None
                return Operation(method.upper(), url)
    known = sorted(
        str(op.get("operationId"))
        for item in doc["paths"].values()
        if isinstance(item, dict)
        for op in item.values()
        if isinstance(op, dict) and op.get("operationId")
    )
    raise NonRetryable(
        "http.config",
        f"OpenAPI document {ref.document} has no operation {ref.operation!r}"
        + (f" (it has: {', '.join(known[:20])})" if known else ""),
    )


def _server(doc: dict[str, Any]) -> str:
    doc_url = str(doc.get("x-headrace-url", ""))
    servers = doc.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        server = servers[0]
        url = str(server.get("url", "/"))
        for name, var in (server.get("variables") or {}).items():
            if isinstance(var, dict) and "default" in var:
                url = url.replace("{" + name + "}", str(var["default"]))
        return urljoin(doc_url, url)
    return urljoin(doc_url, "/")
