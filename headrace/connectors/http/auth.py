"""Turn a config's auth and TLS settings into headers and an SSL context.

Secrets are read from the connector process's environment at call time (so a
rotated secret is picked up on restart, and nothing secret is ever in a
definition, an event or a log line). A variable that is not set is a retryable
``http.secret_missing`` failure: the operator sets it and restarts the
connector, and the task's next attempt goes through. A variable whose value
cannot go in a header (a line break) is a non-retryable ``http.config`` failure
raised before any request is made.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from functools import lru_cache

from headrace.connectors.http.config import (
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    HttpTaskConfig,
    MtlsAuth,
    header_value_problem,
)
from headrace.sdk.errors import NonRetryable, Retryable


def secret(name: str, env: Mapping[str, str], what: str) -> str:
    value = env.get(name)
    if value is None:
        raise Retryable(
            "http.secret_missing",
            f"{what}: environment variable {name} is not set in the http connector's "
            "environment — set it and restart the connector",
        )
    return value


def header_secret(name: str, env: Mapping[str, str], what: str) -> str:
    """A secret sent as (part of) a header value: checked before it goes anywhere."""
    value = secret(name, env, what).strip(" \t")
    problem = header_value_problem(value)
    if problem:
        # The message names the variable, never the value.
        raise NonRetryable(
            "http.config",
            f"{what}: environment variable {name} {problem} (a line break copied from a "
            "file?) — fix it in the http connector's environment and restart the connector",
        )
    return value


def auth_headers(config: HttpTaskConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers the config's auth adds (Authorization, API-key headers)."""
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    for auth in config.auths:
        if isinstance(auth, BearerAuth):
            out["Authorization"] = "Bearer " + header_secret(auth.token_env, env, "bearer auth")
        elif isinstance(auth, BasicAuth):
            user = (
                auth.username
                if auth.username is not None
                else secret(auth.username_env or "", env, "basic auth user")
            )
            password = secret(auth.password_env, env, "basic auth password")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            out["Authorization"] = f"Basic {token}"
        elif isinstance(auth, HeaderAuth):
            out[auth.name] = header_secret(auth.value_env, env, f"header auth {auth.name}")
    return out


TlsKey = tuple[str | None, str | None, str | None, str | None, bool]


def tls_key(config: HttpTaskConfig, env: Mapping[str, str] | None = None) -> TlsKey:
    """What distinguishes one TLS setup from another (one HTTP client per distinct key)."""
    env = os.environ if env is None else env
    mtls: MtlsAuth | None = config.mtls
    password = None
    if mtls is not None and mtls.key_password_env:
        password = secret(mtls.key_password_env, env, "mtls key password")
    return (
        config.tls.ca,
        mtls.cert if mtls else None,
        mtls.key if mtls else None,
        password,
        config.tls.verify,
    )


@lru_cache(maxsize=64)
def ssl_context(key: TlsKey) -> ssl.SSLContext:
    """An SSL context for ``key``; a missing or unreadable file is a config failure."""
    ca, cert, keyfile, password, verify = key
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert is not None:
            ctx.load_cert_chain(cert, keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (ca, cert, keyfile) if f)
        raise NonRetryable(
            "http.config",
            f"cannot load TLS files ({files}) on the http connector's host: {exc} — check the "
            "paths in the step's config (auth.cert/auth.key/tls.ca) and the files' permissions",
        ) from None
    return ctx
