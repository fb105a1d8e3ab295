"""Request parameters and error responses of the query API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from headrace.core.durations import parse_duration
from headrace.errors import ErrorCode, HeadraceError

log = logging.getLogger("headrace.api")

_HTTP_STATUS = {
    ErrorCode.API_BAD_REQUEST: 400,
    ErrorCode.EXPRESSION_INVALID: 400,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.APPROVAL_NOT_FOUND: 404,
    ErrorCode.COMMAND_REJECTED: 409,
    ErrorCode.VIEW_BEHIND: 504,
    ErrorCode.KAFKA_UNAVAILABLE: 503,
    ErrorCode.KAFKA_TIMEOUT: 503,
    ErrorCode.KAFKA_PRODUCE_FAILED: 503,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bad(message: str) -> HeadraceError:
    return HeadraceError(ErrorCode.API_BAD_REQUEST, message)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HeadraceError as exc:
        return json_response({"error": exc.to_dict()}, _HTTP_STATUS.get(exc.code, 500))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        # No such route: a JSON error like the others, so that a client tells it apart
        # from a run or an approval that is not there.
        message = f"no endpoint {request.method} {request.raw_path} — /openapi.json lists them"
        if request.path.startswith(("/runs/", "/approvals/")):
            message += "; a run or approval id with '/' in it is sent percent-encoded (%2F)"
        err = HeadraceError(ErrorCode.API_BAD_REQUEST, message)
        return json_response({"error": err.to_dict()}, exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        err = HeadraceError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return json_response({"error": err.to_dict()}, 500)


def integer(q: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise bad(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def flag(q: Any, name: str) -> bool:
    return str(q.get(name, "")).lower() in ("1", "true", "yes")


def parse_offsets(raw: str) -> dict[int, int]:
    """``0:12,3:40`` → ``{0: 12, 3: 40}``."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        p, sep, o = part.partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise bad(f"min_offsets entry {part!r} is not partition:offset (e.g. 0:12,3:40)")
        out[int(p)] = max(out.get(int(p), 0), int(o))
    return out


def parse_time(raw: str | None, name: str, now_ms: int) -> int | None:
    """Epoch ms, an ISO 8601 time, or a duration meaning that long ago (``7d``)."""
    if not raw:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        return now_ms - parse_duration(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad(
            f"{name}={raw!r} is neither epoch ms, an ISO 8601 time nor a duration like 7d"
        ) from None
    if moment.tzinfo is None:
        raise bad(f"{name}={raw!r} has no time zone — add Z or an offset")
    return int(moment.timestamp() * 1000)
