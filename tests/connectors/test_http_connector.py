"""The HTTP connector as a worker on queue ``http``: dispatches in, HTTP calls out, results back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from http_kit import Reply, ScriptedServer
from sdk_kit import Dispatcher, Results, WorkerThread, free_port, http_get, make_dispatch
from support import wait_for

from headrace.connectors.http import HttpConnectorSettings, http_worker
from headrace.core.task_codec import ResultKind
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def platform(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def connector(platform: Settings) -> Iterator[WorkerThread]:
    conf = HttpConnectorSettings(concurrency=8, circuit_failures=50)
    t = WorkerThread(http_worker(platform, conf)).start()
    yield t
    t.stop()


@pytest.fixture
def results(platform: Settings) -> Iterator[Results]:
    r = Results(platform)
    yield r
    r.close()


def http_task(settings: Settings, config: dict[str, Any], input: Any, **kw: Any):
    return make_dispatch(settings, "http", "call-psp", input, config=config, **kw)


def test_a_task_on_queue_http_becomes_a_call_and_its_mapped_response_the_result(
    platform: Settings, server: ScriptedServer, connector: WorkerThread, results: Results
) -> None:
    server.route("POST", "/charges", Reply(201, {"id": "ch_1"}))
    d = http_task(
        platform,
        {"url": server.url("/charges"), "body": "{amount}", "response": "{charge: .body.id}"},
        {"amount": 12},
        heartbeat_ms=10_000,
    )
    Dispatcher(platform).send(d)
    final = results.final(d.task_id)
    assert final.result.kind is ResultKind.COMPLETED
    assert final.result.output == {"charge": "ch_1"}
    assert final.key == d.result_key and final.partition == d.result_partition
    [req] = server.hits("/charges")
    assert req.json() == {"amount": 12}
    assert req.headers["idempotency-key"] == d.idempotency_key


def test_every_attempt_carries_the_same_idempotency_key_and_failures_carry_hints(
    platform: Settings, server: ScriptedServer, connector: WorkerThread, results: Results
) -> None:
    server.route(
        "POST",
        "/refunds",
        [Reply(503, "maintenance", {"Retry-After": "3"}), Reply(200, {"refund": "re_1"})],
    )
    config = {"url": server.url("/refunds"), "response": ".body.refund"}
    dispatcher = Dispatcher(platform)
    first = http_task(platform, config, {}, idempotency_key="run-5/refund")
    dispatcher.send(first)
    err = results.final(first.task_id).result.error
    assert err is not None
    assert (err.code, err.retryable, err.details["retry_after_ms"]) == ("http.5xx", True, 3000)
    assert err.details["status"] == 503

    # The task service's retry: a new task id, attempt 2, the same key.
    second = http_task(
        platform, config, {}, idempotency_key="run-5/refund", run_id=first.run_id, attempt=2
    )
    dispatcher.send(second)
    assert results.final(second.task_id).result.output == "re_1"
    keys = [r.headers["idempotency-key"] for r in server.hits("/refunds")]
    assert keys == ["run-5/refund", "run-5/refund"]


def test_a_404_fails_the_step_at_once(
    platform: Settings, server: ScriptedServer, connector: WorkerThread, results: Results
) -> None:
    d = http_task(platform, {"method": "GET", "url": server.url("/missing/{id}")}, {"id": 3})
    Dispatcher(platform).send(d)
    err = results.final(d.task_id).result.error
    assert err is not None and (err.code, err.retryable) == ("http.4xx", False)
    assert err.details["status"] == 404


def test_headrace_serve_http_runs_the_connector_and_drains_on_sigterm(
    platform: Settings, server: ScriptedServer, results: Results, tmp_path: Any
) -> None:
    import signal

    from procs import ServiceProcess

    server.route("GET", "/ping", Reply(200, {"pong": True}))
    port = free_port()
    proc = ServiceProcess(
        "http",
        ["-m", "headrace", "serve", "http", "--web-port", str(port)],
        platform,
        tmp_path,
        env={"HEADRACE_WEB_HOST": "127.0.0.1"},
    ).start()
    try:
        d = http_task(platform, {"method": "GET", "url": server.url("/ping")}, {})
        Dispatcher(platform).send(d)
        wait_for(
            lambda: results.of(d.task_id, ResultKind.COMPLETED) or not proc.alive,
            120,
            "the connector's result",
        )
        assert proc.alive, proc.log_tail()
        final = results.final(d.task_id, 5)
        assert final.result.output["body"] == {"pong": True}
        # what docker-compose and the Helm chart probe (on port 6071 there)
        status, body = wait_for(
            lambda: (r := http_get("127.0.0.1", port, "/healthz"))[0] == 200 and r, 15, "healthz"
        )
        assert json.loads(body)["status"] == "ok" and json.loads(body)["queues"] == ["http"]
        status, body = http_get("127.0.0.1", port, "/metrics")
        assert status == 200 and b"headrace_worker_tasks_total" in body
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0, proc.log_tail()
        wait_for(lambda: "left group" in proc.log_path.read_text(), 5, "the drain log line")
    finally:
        proc.stop(10)
