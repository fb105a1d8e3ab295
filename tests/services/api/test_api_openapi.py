"""The OpenAPI document describes exactly the routes the server registers."""

from __future__ import annotations

import re
from typing import Any

from headrace.services.api import openapi
from headrace.services.api.web import Api
from headrace.settings import Settings


def _routes() -> set[tuple[str, str]]:
    app = Api(Settings(), store=None, indexer=None, wait_max=1.0).app()  # type: ignore[arg-type]
    out = set()
    for route in app.router.routes():
        info: dict[str, Any] = route.resource.get_info()  # type: ignore[union-attr]
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            out.add((route.method.lower(), path))
    return out


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    doc = openapi.document()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert _routes() == documented


def test_the_document_is_openapi_3_1_with_resolvable_references() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    for section, name in set(re.findall(r"#/components/(\w+)/(\w+)", repr(doc))):
        assert name in doc["components"][section], (section, name)
    for path, ops in doc["paths"].items():
        declared = {
            p["name"] for op in ops.values() for p in op.get("parameters", []) if p["in"] == "path"
        }
        assert declared == set(re.findall(r"{(\w+)}", path)), path
