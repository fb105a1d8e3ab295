"""The HTTP connector's calls against a real local server that fails on purpose."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from http_kit import Pki, Reply, ScriptedServer, closed_port, make_pki

from headrace.connectors.http import Breakers, HttpCaller
from headrace.connectors.http.breaker import State
from headrace.sdk import NonRetryable, Retryable
from headrace.sdk.errors import TaskError

KEY = "run-1/charge"
NOW_MS = 1_800_000_000_000


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def caller(clock: Clock) -> AsyncIterator[HttpCaller]:
    c = HttpCaller(
        breakers=Breakers(failures_to_open=3, cooldown_ms=5_000, clock=clock),
        env={"PSP_TOKEN": "s3cret", "PSP_USER": "shop", "PSP_PASSWORD": "pa:ss", "API_KEY": "k-1"},
        wall_ms=lambda: NOW_MS,
    )
    yield c
    await c.aclose()


async def fail(coro: Any) -> TaskError:
    with pytest.raises(TaskError) as info:
        await coro
    return info.value


# -- success: url template, headers, body and response mappings ------------------------


async def test_a_call_maps_input_into_url_headers_query_and_body_and_maps_the_response(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/orders/A%2F17/charges", Reply(201, {"id": "ch_1", "amount": 42}))
    config = {
        "method": "post",
        "url": server.url("/orders/{order.id}/charges"),
        "headers": {"X-Tenant": "{tenant}", "X-Fixed": "yes"},
        "query": {"currency": "{order.currency}", "capture": True},
        "body": "{amount: .order.total, items: (.order.items | length)}",
        "response": '{charge: .body.id, status: .status, type: .headers["content-type"]}',
    }
    input = {
        "tenant": "acme",
        "order": {"id": "A/17", "currency": "EUR", "total": 42, "items": [1, 2]},
    }
    out = await caller.call(config, input, idempotency_key=KEY)
    assert out == {"charge": "ch_1", "status": 201, "type": "application/json"}
    [req] = server.hits("/orders/A%2F17/charges")
    assert req.json() == {"amount": 42, "items": 2}
    assert req.query == {"currency": ["EUR"], "capture": ["true"]}
    assert req.headers["x-tenant"] == "acme" and req.headers["x-fixed"] == "yes"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["idempotency-key"] == KEY


async def test_without_mappings_the_input_is_the_body_and_the_result_is_the_whole_response(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("PUT", "/things/7", Reply(200, "plain text", {"Content-Type": "text/plain"}))
    out = await caller.call(
        {"method": "PUT", "url": server.url("/things/{id}")},
        {"id": 7, "x": True},
        idempotency_key=KEY,
    )
    assert out["status"] == 200 and out["body"] == "plain text"
    assert out["headers"]["content-type"] == "text/plain"
    assert server.hits("/things/7")[0].json() == {"id": 7, "x": True}


async def test_get_sends_no_body_and_statuses_in_accept_succeed(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("GET", "/customers/9", Reply(404, {"error": "none"}))
    out = await caller.call(
        {
            "method": "GET",
            "url": server.url("/customers/{id}"),
            "accept": [404],
            "response": "{found: (.status == 200)}",
        },
        {"id": 9},
        idempotency_key=KEY,
    )
    assert out == {"found": False}
    [req] = server.hits("/customers/9")
    assert req.body == b"" and "content-type" not in req.headers


async def test_the_idempotency_header_can_be_renamed_or_turned_off(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/x", Reply(200, {}))
    await caller.call(
        {"url": server.url("/x"), "idempotency_header": "X-Request-Id"}, {}, idempotency_key=KEY
    )
    await caller.call(
        {"url": server.url("/x"), "idempotency_header": None}, {}, idempotency_key=KEY
    )
    first, second = server.hits("/x")
    assert first.headers["x-request-id"] == KEY and "idempotency-key" not in first.headers
    assert "idempotency-key" not in second.headers and "x-request-id" not in second.headers


# -- failures: codes, retryability, hints -------------------------------------------------


async def test_5xx_is_retryable_with_status_and_body_in_the_details(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/pay", Reply(500, {"error": "db down"}))
    err = await fail(caller.call({"url": server.url("/pay?token=abc")}, {}, idempotency_key=KEY))
    assert isinstance(err, Retryable) and err.code == "http.5xx"
    assert err.details["status"] == 500
    assert "db down" in err.details["body"]
    assert err.details["url"] == server.url("/pay")  # the query string may hold secrets
    assert "retry_after_ms" not in err.details


async def test_503_and_429_pass_retry_after_on_as_a_hint(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/busy", Reply(503, "later", {"Retry-After": "7"}))
    when = datetime.fromtimestamp(NOW_MS / 1000 + 90, UTC)
    server.route(
        "POST", "/slow-down", Reply(429, "", {"Retry-After": format_datetime(when, usegmt=True)})
    )
    busy = await fail(caller.call({"url": server.url("/busy")}, {}, idempotency_key=KEY))
    assert (busy.code, busy.retryable, busy.details["retry_after_ms"]) == ("http.5xx", True, 7000)
    limited = await fail(caller.call({"url": server.url("/slow-down")}, {}, idempotency_key=KEY))
    assert (limited.code, limited.retryable) == ("http.429", True)
    assert limited.details["retry_after_ms"] == 90_000


async def test_4xx_is_not_retryable_except_408_and_429(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    for status in (400, 401, 404, 409, 422):
        server.route("POST", f"/s{status}", Reply(status, {"error": status}))
        err = await fail(caller.call({"url": server.url(f"/s{status}")}, {}, idempotency_key=KEY))
        assert isinstance(err, NonRetryable) and err.code == "http.4xx"
        assert err.details["status"] == status
    server.route("POST", "/s408", Reply(408))
    err = await fail(caller.call({"url": server.url("/s408")}, {}, idempotency_key=KEY))
    assert isinstance(err, Retryable) and err.code == "http.408"


async def test_a_slow_answer_times_out_within_the_configured_timeout(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/slow", Reply(200, {}, delay_s=30))
    started = time.monotonic()
    err = await fail(
        caller.call({"url": server.url("/slow"), "timeout": "300ms"}, {}, idempotency_key=KEY)
    )
    assert (err.code, err.retryable) == ("http.timeout", True)
    assert time.monotonic() - started < 3


async def test_a_body_trickling_past_the_timeout_times_out_too(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/trickle", Reply(200, "x" * 100, trickle_s=0.05))
    started = time.monotonic()
    err = await fail(
        caller.call({"url": server.url("/trickle"), "timeout": "400ms"}, {}, idempotency_key=KEY)
    )
    assert err.code == "http.timeout"
    assert time.monotonic() - started < 3


async def test_the_attempt_deadline_caps_the_timeout(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/slow", Reply(200, {}, delay_s=30))
    started = time.monotonic()
    err = await fail(
        caller.call(
            {"url": server.url("/slow"), "timeout": "30s"}, {}, idempotency_key=KEY, time_left_s=0.3
        )
    )
    assert err.code == "http.timeout" and time.monotonic() - started < 3


async def test_connection_refused_is_a_retryable_connect_failure(caller: HttpCaller) -> None:
    err = await fail(
        caller.call({"url": f"http://127.0.0.1:{closed_port()}/x"}, {}, idempotency_key=KEY)
    )
    assert (err.code, err.retryable) == ("http.connect", True)


async def test_a_response_over_the_size_limit_fails(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/big", Reply(200, "x" * 5000))
    err = await fail(
        caller.call(
            {"url": server.url("/big"), "max_response_bytes": 1000}, {}, idempotency_key=KEY
        )
    )
    assert (err.code, err.retryable) == ("http.response_too_large", False)


async def test_input_that_does_not_fit_the_templates_or_mappings_is_not_retryable(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/ok", Reply(200, {"a": 1}))
    missing = await fail(
        caller.call({"url": server.url("/orders/{order.id}")}, {}, idempotency_key=KEY)
    )
    assert (missing.code, missing.retryable) == ("http.template", False)
    assert "order.id" in missing.message
    bad_body = await fail(
        caller.call(
            {"url": server.url("/ok"), "body": '.a | error("no")'}, {"a": 1}, idempotency_key=KEY
        )
    )
    assert (bad_body.code, bad_body.retryable) == ("http.body_mapping", False)
    bad_resp = await fail(
        caller.call(
            {"url": server.url("/ok"), "response": '.body.a | error("x")'}, {}, idempotency_key=KEY
        )
    )
    assert (bad_resp.code, bad_resp.retryable) == ("http.response_mapping", False)
    assert server.hits("/orders/") == []


async def test_a_bad_config_says_what_to_fix(caller: HttpCaller) -> None:
    err = await fail(caller.call({"method": "FETCH", "url": "http://x"}, {}, idempotency_key=KEY))
    assert (err.code, err.retryable) == ("http.config", False)
    assert "method" in err.message
    err = await fail(
        caller.call(
            {"url": "http://x", "auth": {"type": "bearer", "token": "abc"}}, {}, idempotency_key=KEY
        )
    )
    assert err.code == "http.config" and "token_env" in err.message


# -- auth ---------------------------------------------------------------------------------


async def test_bearer_basic_and_header_auth_read_secrets_from_the_environment(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/a", Reply(200, {}))
    url = server.url("/a")
    await caller.call(
        {"url": url, "auth": {"type": "bearer", "token_env": "PSP_TOKEN"}}, {}, idempotency_key=KEY
    )
    await caller.call(
        {
            "url": url,
            "auth": {"type": "basic", "username_env": "PSP_USER", "password_env": "PSP_PASSWORD"},
        },
        {},
        idempotency_key=KEY,
    )
    await caller.call(
        {"url": url, "auth": {"type": "header", "name": "X-Api-Key", "value_env": "API_KEY"}},
        {},
        idempotency_key=KEY,
    )
    bearer, basic, header = server.hits("/a")
    assert bearer.headers["authorization"] == "Bearer s3cret"
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(b"shop:pa:ss").decode()
    assert header.headers["x-api-key"] == "k-1"


async def test_a_missing_secret_is_retryable_and_names_the_variable(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    err = await fail(
        caller.call(
            {"url": server.url("/a"), "auth": {"type": "bearer", "token_env": "NOPE"}},
            {},
            idempotency_key=KEY,
        )
    )
    assert (err.code, err.retryable) == ("http.secret_missing", True)
    assert "NOPE" in err.message
    assert server.requests == []


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_mtls_presents_the_client_certificate_and_trusts_the_given_ca(
    pki: Pki, caller: HttpCaller
) -> None:
    server = ScriptedServer(tls=pki.server_context(require_client_cert=True))
    try:
        server.route("POST", "/secure", Reply(200, {"ok": True}))
        config = {
            "url": server.url("/secure", host="localhost"),
            "auth": [
                {"type": "mtls", "cert": str(pki.client_cert), "key": str(pki.client_key)},
                {"type": "bearer", "token_env": "PSP_TOKEN"},
            ],
            "tls": {"ca": str(pki.ca)},
            "response": ".body",
        }
        assert await caller.call(config, {}, idempotency_key=KEY) == {"ok": True}
        [req] = server.hits("/secure")
        assert req.client_cn == "headrace-connector"
        assert req.headers["authorization"] == "Bearer s3cret"

        no_cert = {"url": config["url"], "tls": {"ca": str(pki.ca)}}
        err = await fail(caller.call(no_cert, {}, idempotency_key=KEY))
        assert err.code in ("http.connect", "http.transport") and err.retryable
        untrusted = {**config, "tls": {"ca": str(pki.other_ca)}}
        err = await fail(caller.call(untrusted, {}, idempotency_key=KEY))
        assert err.code == "http.connect"
        assert len(server.hits("/secure")) == 1
    finally:
        server.close()


async def test_unreadable_certificate_files_are_a_config_failure(
    tmp_path: Path, caller: HttpCaller
) -> None:
    config = {
        "url": "https://localhost:1/x",
        "auth": {"type": "mtls", "cert": str(tmp_path / "none.pem")},
    }
    err = await fail(caller.call(config, {}, idempotency_key=KEY))
    assert (err.code, err.retryable) == ("http.config", False)
    assert "none.pem" in err.message


# -- circuit breaker ----------------------------------------------------------------------


async def test_the_circuit_opens_after_consecutive_failures_and_recovers_after_the_cooldown(
    server: ScriptedServer, caller: HttpCaller, clock: Clock
) -> None:
    server.route("POST", "/flaky", [Reply(500), Reply(500), Reply(500), Reply(200, {"ok": 1})])
    config = {"url": server.url("/flaky"), "response": ".body"}
    host = f"127.0.0.1:{server.port}"
    for _ in range(3):
        assert (await fail(caller.call(config, {}, idempotency_key=KEY))).code == "http.5xx"
    assert caller.breakers.state(host) is State.OPEN
    clock.ms += 1_000
    err = await fail(caller.call(config, {}, idempotency_key=KEY))
    assert (err.code, err.retryable, err.details["retry_after_ms"]) == (
        "http.circuit_open",
        True,
        4_000,
    )
    assert len(server.hits("/flaky")) == 3  # failed fast: the server saw nothing

    clock.ms += 4_000  # cool-down over: one probe goes through, succeeds, closes the circuit
    assert await caller.call(config, {}, idempotency_key=KEY) == {"ok": 1}
    assert caller.breakers.state(host) is State.CLOSED
    assert len(server.hits("/flaky")) == 4


async def test_a_failed_probe_opens_the_circuit_again_and_other_hosts_are_unaffected(
    server: ScriptedServer, caller: HttpCaller, clock: Clock
) -> None:
    server.route("POST", "/down", Reply(503))
    server.route("POST", "/fine", Reply(200, {}))
    down = {"url": server.url("/down")}
    for _ in range(3):
        await fail(caller.call(down, {}, idempotency_key=KEY))
    clock.ms += 5_000
    assert (await fail(caller.call(down, {}, idempotency_key=KEY))).code == "http.5xx"  # the probe
    assert (await fail(caller.call(down, {}, idempotency_key=KEY))).code == "http.circuit_open"
    assert len(server.hits("/down")) == 4
    # "localhost" is another host than "127.0.0.1" for the breaker
    await caller.call({"url": server.url("/fine", host="localhost")}, {}, idempotency_key=KEY)


async def test_4xx_and_429_do_not_open_the_circuit(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/nf", Reply(404))
    server.route("POST", "/tm", Reply(429))
    for _ in range(5):
        await fail(caller.call({"url": server.url("/nf")}, {}, idempotency_key=KEY))
        await fail(caller.call({"url": server.url("/tm")}, {}, idempotency_key=KEY))
    assert caller.breakers.state(f"127.0.0.1:{server.port}") is State.CLOSED


async def test_a_header_value_with_a_line_break_fails_before_sending_and_spares_the_circuit(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/notes", Reply(200, {}))
    config = {"url": server.url("/notes"), "headers": {"X-Note": "{note}"}}
    host = f"127.0.0.1:{server.port}"
    for bad in ("a\r\nX-Injected: 1", "nul\x00", "caf\u00e9"):
        for _ in range(3):  # as many as open the circuit (failures_to_open=3)
            err = await fail(caller.call(config, {"note": bad}, idempotency_key=KEY))
            assert (err.code, err.retryable) == ("http.template", False), err.message
            assert "X-Note" in err.message
    assert server.hits("/notes") == []
    assert caller.breakers.state(host) is State.CLOSED
    await caller.call(config, {"note": "  fine  "}, idempotency_key=KEY)
    assert server.hits("/notes")[0].headers["x-note"] == "fine"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"headers": {"X-Note": "a\nb"}}, "line break"),
        ({"headers": {"X Note": "a"}}, "not an HTTP header name"),
        ({"idempotency_header": "Idem:Key"}, "not an HTTP header name"),
        ({"auth": {"type": "header", "name": "X Key", "value_env": "API_KEY"}}, "header name"),
        ({"url": "ftp://127.0.0.1/x"}, "scheme 'ftp'"),
        ({"url": "http://127.0.0.1/a\r\nb"}, "line break"),
    ],
)
async def test_headers_and_urls_the_config_gets_wrong_are_config_failures(
    caller: HttpCaller, config: dict[str, Any], needle: str
) -> None:
    err = await fail(caller.call({"url": "http://127.0.0.1/", **config}, {}, idempotency_key=KEY))
    assert (err.code, err.retryable) == ("http.config", False)
    assert needle in err.message


async def test_a_url_the_input_makes_uncallable_fails_before_sending(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    config = {"url": "{+base}/charges"}
    for base in (
        "payments.internal",
        "ftp://payments.internal",
        f"http://127.0.0.1:{server.port}\n",
    ):
        for _ in range(3):
            err = await fail(caller.call(config, {"base": base}, idempotency_key=KEY))
            assert (err.code, err.retryable) == ("http.template", False), err.message
    assert caller.breakers.circuits == {}  # no host was blamed, or even asked
    err = await fail(caller.call({"url": "ht tp://{id}"}, {"id": 1}, idempotency_key=KEY))
    assert err.code == "http.config"  # broken whatever the input


async def test_a_secret_that_cannot_go_in_a_header_is_a_config_failure_naming_the_variable(
    server: ScriptedServer,
) -> None:
    caller = HttpCaller(env={"PSP_TOKEN": "s3cret\n", "PADDED": " k-1\t"})
    server.route("POST", "/a", Reply(200, {}))
    try:
        auth = {"type": "bearer", "token_env": "PSP_TOKEN"}
        err = await fail(
            caller.call({"url": server.url("/a"), "auth": auth}, {}, idempotency_key=KEY)
        )
        assert (err.code, err.retryable) == ("http.config", False)
        assert "PSP_TOKEN" in err.message and "s3cret" not in err.message
        padded = {"type": "header", "name": "X-Api-Key", "value_env": "PADDED"}
        await caller.call({"url": server.url("/a"), "auth": padded}, {}, idempotency_key=KEY)
        assert server.hits("/a")[0].headers["x-api-key"] == "k-1"
    finally:
        await caller.aclose()


async def test_timeouts_cut_short_by_the_attempt_deadline_spare_the_circuit(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route("POST", "/slow", Reply(200, {}, delay_s=30))
    host = f"127.0.0.1:{server.port}"
    config = {"url": server.url("/slow"), "timeout": "30s"}
    for _ in range(4):
        err = await fail(caller.call(config, {}, idempotency_key=KEY, time_left_s=0.1))
        assert err.code == "http.timeout" and err.details["waited_for"] == "attempt_deadline"
    assert caller.breakers.state(host) is State.CLOSED
    assert len(server.hits("/slow")) == 4
    # the call's own timeout does count
    for _ in range(3):
        err = await fail(caller.call({**config, "timeout": "100ms"}, {}, idempotency_key=KEY))
        assert err.details["waited_for"] == "timeout"
    assert caller.breakers.state(host) is State.OPEN


async def test_waiting_for_a_connection_of_the_own_pool_spares_the_circuit(
    server: ScriptedServer, clock: Clock
) -> None:
    import asyncio

    server.route("POST", "/slow", Reply(200, {"done": True}, delay_s=1.0))
    caller = HttpCaller(
        breakers=Breakers(failures_to_open=1, cooldown_ms=5_000, clock=clock), max_connections=1
    )
    try:
        busy = asyncio.create_task(
            caller.call({"url": server.url("/slow"), "response": ".body"}, {}, idempotency_key=KEY)
        )
        deadline = asyncio.get_running_loop().time() + 10
        while not server.hits("/slow"):  # then it holds the only connection
            assert asyncio.get_running_loop().time() < deadline, "the first call never arrived"
            await asyncio.sleep(0.01)
        err = await fail(
            caller.call({"url": server.url("/slow"), "timeout": "200ms"}, {}, idempotency_key=KEY)
        )
        assert err.code == "http.timeout" and err.details["waited_for"] == "connection_pool"
        assert caller.breakers.state(f"127.0.0.1:{server.port}") is State.CLOSED
        assert await busy == {"done": True}
        assert len(server.hits("/slow")) == 1
    finally:
        await caller.aclose()


# -- OpenAPI ----------------------------------------------------------------------------


async def test_an_openapi_operation_id_resolves_method_and_path(
    server: ScriptedServer, caller: HttpCaller
) -> None:
    server.route(
        "GET",
        "/openapi.json",
        Reply(
            200,
            {
                "openapi": "3.0.3",
                "servers": [{"url": "/{base}", "variables": {"base": {"default": "api/v2"}}}],
                "paths": {
                    "/charges/{chargeId}/refunds": {
                        "post": {"operationId": "refundCharge"},
                        "get": {"operationId": "listRefunds"},
                    }
                },
            },
        ),
    )
    server.route("POST", "/api/v2/charges/ch_9/refunds", Reply(201, {"refund": "re_1"}))
    config = {
        "openapi": {"document": server.url("/openapi.json"), "operation": "refundCharge"},
        "body": "{amount}",
        "response": ".body.refund",
    }
    assert (
        await caller.call(config, {"chargeId": "ch_9", "amount": 5}, idempotency_key=KEY) == "re_1"
    )
    assert (
        await caller.call(config, {"chargeId": "ch_9", "amount": 5}, idempotency_key=KEY) == "re_1"
    )
    assert len(server.hits("/openapi.json")) == 1  # fetched once
    assert server.hits("/api/v2/charges/ch_9/refunds")[0].json() == {"amount": 5}
    err = await fail(
        caller.call(
            {"openapi": {"document": server.url("/openapi.json"), "operation": "nope"}},
            {},
            idempotency_key=KEY,
        )
    )
    assert err.code == "http.config" and "listRefunds" in err.message
