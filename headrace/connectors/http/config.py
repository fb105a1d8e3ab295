"""The ``config`` of a task on the ``http`` queue: what to call and how.

A step hands the connector its input and this config (see docs/connectors/http.md)::

    config:
      method: POST
      url: https://payments.internal/charges/{order.id}
      headers: {X-Tenant: "{tenant}"}
      body: "{amount: .order.total, currency: .order.currency}"   # jq over the input
      auth: {type: bearer, token_env: PAYMENTS_TOKEN}
      timeout: 10s
      response: "{charge_id: .body.id, status: .status}"        # jq over {status, headers, body}

Secrets never appear in a definition: auth names environment variables of the
connector process (``token_env``, ``password_env``, ``value_env``,
``key_password_env``) and files (``cert``, ``key``, ``ca``). The config is
validated once per distinct config (cached) and its templates and jq
expressions compiled then; a bad config is a non-retryable ``http.config``
failure that says what to fix.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from headrace.connectors.http.templates import Template, parse_template
from headrace.core.durations import parse_duration
from headrace.core.expr import Expression, compile_expr
from headrace.errors import HeadraceError
from headrace.sdk.errors import NonRetryable

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_BODY_METHODS = ("POST", "PUT", "PATCH")
_SECRET_KEYS = ("token", "password", "value", "secret", "key_password", "api_key")


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_TEXT = re.compile(r"[\t\x20-\x7e]*")


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an HTTP header name, or None."""
    if _HEADER_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not an HTTP header name (ASCII letters, digits and !#$%&'*+-.^_`|~ only, "
        "no spaces or colons)"
    )


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None.

    Line breaks would end the header early (a request smuggling vector, refused
    before anything is sent); the client encodes header values as ASCII."""
    if _HEADER_TEXT.fullmatch(value):
        return None
    bad = next(c for c in value if not _HEADER_TEXT.fullmatch(c))
    if bad in "\r\n":
        kind = "a line break"
    elif ord(bad) < 0x20 or ord(bad) == 0x7F:
        kind = "a control character"
    else:
        kind = "non-ASCII text"
    return f"contains {kind} ({bad!r}), which an HTTP header cannot carry"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be called, or None."""
    bad = next((c for c in url if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        kind = "a line break" if bad in "\r\n" else "a control character"
        return f"contains {kind} ({bad!r})"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return (
            f"has the scheme {parsed.scheme!r}, not http or https"
            if parsed.scheme
            else "has no http:// or https:// scheme"
        )
    if not parsed.host:
        return "names no host"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _SECRET_KEYS:
                if key in data and f"{key}_env" in cls.model_fields:
                    raise ValueError(
                        f"{key!r} holds a secret, and secrets never go in a definition — put it "
                        f"in an environment variable of the connector and name that variable "
                        f"in '{key}_env'"
                    )
        return data


class BearerAuth(_Strict):
    """``Authorization: Bearer <$token_env>``."""

    type: Literal["bearer"]
    token_env: str


class BasicAuth(_Strict):
    """``Authorization: Basic ...`` from a user name and ``$password_env``."""

    type: Literal["basic"]
    username: str | None = None
    username_env: str | None = None
    password_env: str

    @model_validator(mode="after")
    def _one_username(self) -> BasicAuth:
        if (self.username is None) == (self.username_env is None):
            raise ValueError("basic auth needs exactly one of 'username' and 'username_env'")
        return self


class HeaderAuth(_Strict):
    """An API-key header: ``<name>: <$value_env>``."""

    type: Literal["header"]
    name: str
    value_env: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = header_name_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class MtlsAuth(_Strict):
    """A client certificate (PEM files on the connector's host)."""

    type: Literal["mtls"]
    cert: str
    key: str | None = Field(None, description="private key file (if not inside `cert`)")
    key_password_env: str | None = None


Auth = Annotated[BearerAuth | BasicAuth | HeaderAuth | MtlsAuth, Field(discriminator="type")]


class Tls(_Strict):
    """How the server's certificate is checked."""

    ca: str | None = Field(None, description="CA bundle (PEM) to trust instead of the system's")
    verify: bool = Field(True, description="false: do not verify the server (tests only)")


class OpenApiRef(_Strict):
    """Take method and path from an OpenAPI 3 document's ``operationId``."""

    document: str = Field(description="URL of the OpenAPI document (JSON or YAML)")
    operation: str = Field(description="the operationId to call")
    server: str | None = Field(None, description="base URL (default: the document's servers[0])")


class HttpTaskConfig(_Strict):
    """One task's HTTP call, as written in the step's ``config``."""

    method: str = "POST"
    url: str | None = None
    openapi: OpenApiRef | None = None
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, description="jq over the input; default `.` for POST/PUT/PATCH")
    response: str | None = Field(None, description="jq over {status, headers, body}; $input")
    auth: Auth | list[Auth] | None = None
    tls: Tls = Field(default_factory=Tls)
    timeout: str = "30s"
    accept: list[int] = Field(default_factory=list, description="non-2xx statuses that succeed")
    idempotency_header: str | None = "Idempotency-Key"
    follow_redirects: bool = True
    max_response_bytes: int = Field(1 << 20, ge=0)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v.upper() not in METHODS:
            raise ValueError(f"method {v!r} is not one of {', '.join(METHODS)}")
        return v.upper()

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            problem = header_name_problem(name) or (
                f"the value of header {name!r} {p}" if (p := header_value_problem(value)) else None
            )
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("idempotency_header")
    @classmethod
    def _idempotency_header(cls, v: str | None) -> str | None:
        problem = header_name_problem(v) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _target(self) -> HttpTaskConfig:
        if (self.url is None) == (self.openapi is None):
            raise ValueError("give exactly one of 'url' and 'openapi'")
        return self

    @property
    def auths(self) -> list[BearerAuth | BasicAuth | HeaderAuth | MtlsAuth]:
        if self.auth is None:
            return []
        return list(self.auth) if isinstance(self.auth, list) else [self.auth]

    @property
    def mtls(self) -> MtlsAuth | None:
        return next((a for a in self.auths if isinstance(a, MtlsAuth)), None)


class CompiledCall:
    """A validated config with its templates and expressions compiled."""

    __slots__ = (
        "body",
        "config",
        "headers",
        "query",
        "response",
        "sends_body",
        "timeout_s",
        "url",
    )

    def __init__(self, config: HttpTaskConfig, body_given: bool) -> None:
        self.config = config
        self.url: Template | None = parse_template(config.url) if config.url else None
        if self.url is not None and not self.url.placeholders:
            problem = url_problem(self.url.source)
            if problem:
                raise ValueError(f"url {self.url.source!r} {problem}")
        self.headers = {k: parse_template(v) for k, v in config.headers.items()}
        self.query = {
            k: parse_template(v) if isinstance(v, str) else v for k, v in config.query.items()
        }
        self.sends_body = config.body is not None or (
            not body_given and config.method in _BODY_METHODS
        )
        self.body: Expression | None = None
        if self.sends_body:
            self.body = compile_expr(config.body or ".")
        self.response: Expression | None = (
            compile_expr(config.response) if config.response else None
        )
        self.timeout_s = parse_duration(config.timeout) / 1000.0


def compile_call(config: dict[str, Any]) -> CompiledCall:
    """Validate and compile a task's config (cached by content)."""
    try:
        key = json.dumps(config, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise NonRetryable("http.config", f"task config is not JSON: {exc}") from None
    return _compile(key)


@lru_cache(maxsize=1024)
def _compile(key: str) -> CompiledCall:
    raw = json.loads(key)
    if not isinstance(raw, dict):
        raise NonRetryable("http.config", "the task config must be an object")
    try:
        config = HttpTaskConfig.model_validate(raw)
        return CompiledCall(config, body_given="body" in raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise NonRetryable(
            "http.config", f"http task config is invalid — {problems}", details={"config": raw}
        ) from None
    except (ValueError, HeadraceError) as exc:
        raise NonRetryable("http.config", f"http task config is invalid — {exc}") from None
