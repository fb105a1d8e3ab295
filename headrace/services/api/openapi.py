"""The query API's OpenAPI 3.1 document (``GET /openapi.json``), written by hand.

A test checks that every route the server registers is described here with
the same method, so the document cannot drift from the routes.
"""

from __future__ import annotations

from typing import Any

from headrace.core.views import APPROVAL_STATUSES, STATUSES


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _p(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": body}


_ERR = {"$ref": "#/components/responses/Error"}

CONSISTENCY = [
    _q(
        "min_offsets",
        "wait until the views reflect `events` up to these offsets: `partition:offset,...`",
    ),
    _q(
        "fresh",
        "`true`: wait until the views reflect everything in `events` as of the request",
        {"type": "boolean"},
    ),
    _q("timeout", "longest wait for min_offsets/fresh/min_seq, e.g. `5s` (default 10s)"),
]
PAGING = [
    _q("limit", "most items per page (default 100, at most 1000)", {"type": "integer"}),
    _q("cursor", "the `next` of the previous page"),
]
RUN_PATH = [_p("tenant", "the run's tenant"), _p("run_id", "the run id")]


def _control(op: str, what: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": what,
            "operationId": f"{op}Run",
            "parameters": RUN_PATH,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Control"}}
                },
            },
            "responses": {
                "202": _ok(
                    "the command was written to `commands`",
                    {"$ref": "#/components/schemas/Accepted"},
                ),
                "400": _ERR,
                "404": _ERR,
                "409": _ERR,
            },
        }
    }


def document(version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "headrace query API",
            "version": version,
            "description": (
                "Runs, approvals and step statistics folded from the `events` topic, and "
                "control operations on runs. Times are epoch milliseconds (the runs' logical "
                "time). Reads are eventually consistent; `min_offsets`, `fresh` and `min_seq` "
                "make a read wait until the views cover a write (docs/operations.md)."
            ),
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "liveness: the indexer runs",
                    "operationId": "health",
                    "responses": {"200": _ok("healthy"), "503": _ERR},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "operationId": "openapi",
                    "responses": {"200": _ok("OpenAPI 3.1")},
                }
            },
            "/position": {
                "get": {
                    "summary": "offsets of `events` the views reflect (next offset per partition)",
                    "operationId": "position",
                    "parameters": CONSISTENCY,
                    "responses": {
                        "200": _ok("positions", {"$ref": "#/components/schemas/Position"}),
                        "504": _ERR,
                    },
                }
            },
            "/runs": {
                "get": {
                    "summary": "list runs",
                    "operationId": "listRuns",
                    "parameters": [
                        _q("type", "workflow type"),
                        _q("tenant", "tenant"),
                        _q(
                            "status",
                            "comma-separated statuses, or `active` (running, suspended, "
                            "compensating) or `terminal`",
                        ),
                        _q("filter", "jq over the run data (`$input`, `$run` bound); truthy keeps"),
                        _q(
                            "full",
                            "`true`: whole run documents instead of rows",
                            {"type": "boolean"},
                        ),
                        *PAGING,
                        *CONSISTENCY,
                    ],
                    "responses": {
                        "200": _ok("a page of runs", {"$ref": "#/components/schemas/RunPage"}),
                        "400": _ERR,
                        "504": _ERR,
                    },
                }
            },
            "/runs/{tenant}/{run_id}": {
                "get": {
                    "summary": "one run's summary",
                    "operationId": "getRun",
                    "parameters": [
                        *RUN_PATH,
                        _q("min_seq", "wait until the view reflects this seq", {"type": "integer"}),
                        *CONSISTENCY,
                    ],
                    "responses": {
                        "200": _ok("the run", {"$ref": "#/components/schemas/Run"}),
                        "404": _ERR,
                        "504": _ERR,
                    },
                }
            },
            "/runs/{tenant}/{run_id}/history": {
                "get": {
                    "summary": "the run's events, read from `events` (redeliveries collapsed)",
                    "operationId": "getRunHistory",
                    "parameters": [
                        *RUN_PATH,
                        _q("verify", "`true`: check the hash chain", {"type": "boolean"}),
                    ],
                    "responses": {"200": _ok("the history"), "404": _ERR},
                }
            },
            "/runs/{tenant}/{run_id}/suspend": _control(
                "suspend", "hold the run: nothing new starts"
            ),
            "/runs/{tenant}/{run_id}/resume": _control("resume", "lift a suspension"),
            "/runs/{tenant}/{run_id}/cancel": _control(
                "cancel", "compensate completed steps (reverse order), then RunCancelled"
            ),
            "/runs/{tenant}/{run_id}/terminate": _control(
                "terminate", "end at once, no compensation"
            ),
            "/approvals": {
                "get": {
                    "summary": "list approval requests (an inbox with assignee/role)",
                    "operationId": "listApprovals",
                    "parameters": [
                        _q("assignee", "only those this user may decide"),
                        _q(
                            "role", "only those members of these roles (comma-separated) may decide"
                        ),
                        _q("tenant", "tenant"),
                        _q(
                            "status",
                            f"comma-separated of {', '.join(APPROVAL_STATUSES)}, or `all` "
                            "(default pending)",
                        ),
                        *PAGING,
                        *CONSISTENCY,
                    ],
                    "responses": {
                        "200": _ok(
                            "a page of approvals", {"$ref": "#/components/schemas/ApprovalPage"}
                        ),
                        "400": _ERR,
                    },
                }
            },
            "/approvals/{approval_id}": {
                "get": {
                    "summary": "one approval request",
                    "operationId": "getApproval",
                    "parameters": [
                        _p("approval_id", "the approval id (`<run_id>:<seq>`)"),
                        _q("tenant", "needed only when two tenants have the id"),
                        *CONSISTENCY,
                    ],
                    "responses": {
                        "200": _ok("the approval", {"$ref": "#/components/schemas/Approval"}),
                        "404": _ERR,
                        "409": _ERR,
                    },
                }
            },
            "/stats/steps": {
                "get": {
                    "summary": "durations of ended steps per (type, step): counts, percentiles "
                    "(`truncated` when the sample budget stopped the scan)",
                    "operationId": "stepStats",
                    "parameters": [
                        _q("type", "workflow type"),
                        _q("step", "step name (with type)"),
                        _q(
                            "since",
                            "steps that ended at or after: ISO time, epoch ms, or a duration "
                            "ago (`7d`)",
                        ),
                        _q("until", "steps that ended before (same forms)"),
                        _q("samples", "also the latest N samples per step", {"type": "integer"}),
                        *CONSISTENCY,
                    ],
                    "responses": {"200": _ok("statistics"), "400": _ERR},
                }
            },
            "/stats/sla": {
                "get": {
                    "summary": "SLA report: met / at risk / breached per step (and per run), "
                    "and breach predictions for open steps (`truncated` when a scan budget "
                    "stopped it)",
                    "operationId": "slaReport",
                    "parameters": [
                        _q("type", "workflow type"),
                        _q(
                            "since",
                            "steps that ended at or after: ISO time, epoch ms, or a duration "
                            "ago (default `7d`)",
                        ),
                        _q("until", "steps that ended before (same forms)"),
                        _q(
                            "open",
                            "most open-step predictions to return (default 50)",
                            {"type": "integer"},
                        ),
                        *CONSISTENCY,
                    ],
                    "responses": {"200": _ok("the report"), "400": _ERR},
                }
            },
            "/stats/runs": {
                "get": {
                    "summary": "runs by status (and per type)",
                    "operationId": "runStats",
                    "parameters": [
                        _q("type", "workflow type"),
                        _q("tenant", "tenant"),
                        *CONSISTENCY,
                    ],
                    "responses": {"200": _ok("counts")},
                }
            },
        },
        "components": {
            "responses": {
                "Error": {
                    "description": "what went wrong, with a headrace error code",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "schemas": _SCHEMAS,
        },
    }


_STATUS = {"type": "string", "enum": list(STATUSES)}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "examples": ["HR-RUN-002"]},
                    "message": {"type": "string"},
                    "retryable": {"type": "boolean"},
                },
            }
        },
    },
    "Control": {
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "minLength": 1},
            "actor": {
                "type": "string",
                "description": "who asks (default: the X-Headrace-Actor header, else `api`)",
            },
        },
    },
    "Accepted": {
        "type": "object",
        "properties": {
            "command_id": {"type": "string"},
            "op": {"type": "string"},
            "tenant": {"type": "string"},
            "run_id": {"type": "string"},
            "status": _STATUS,
        },
    },
    "Position": {
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "offsets": {"type": "object", "additionalProperties": {"type": "integer"}},
            "started_from": {"type": "object", "additionalProperties": {"type": "integer"}},
            "applied_since_start": {"type": "integer"},
        },
    },
    "RunRow": {
        "type": "object",
        "properties": {
            "tenant": {"type": "string"},
            "run_id": {"type": "string"},
            "type": {"type": "string"},
            "version": {"type": "integer"},
            "status": _STATUS,
            "started_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "ended_at": {"type": ["integer", "null"]},
            "last_seq": {"type": "integer"},
            "input": {},
            "active_steps": {"type": "array", "items": {"type": "string"}},
            "error": {"type": ["object", "null"]},
        },
    },
    "Run": {
        "type": "object",
        "description": "the run summary; field by field in docs/operations.md",
        "properties": {
            "tenant": {"type": "string"},
            "run_id": {"type": "string"},
            "status": _STATUS,
            "data": {},
            "output": {},
            "children": {"type": "array", "items": {"type": "object"}},
            "active_steps": {"type": "array", "items": {"type": "object"}},
            "control": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RunPage": {
        "type": "object",
        "properties": {
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunRow"}},
            "next": {"type": ["string", "null"]},
        },
    },
    "Approval": {
        "type": "object",
        "properties": {
            "approval_id": {"type": "string"},
            "status": {"type": "string", "enum": list(APPROVAL_STATUSES)},
            "assignees": {"type": "array", "items": {"type": "string"}},
            "roles": {"type": "array", "items": {"type": "string"}},
            "decisions": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ApprovalPage": {
        "type": "object",
        "properties": {
            "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}},
            "next": {"type": ["string", "null"]},
        },
    },
}
