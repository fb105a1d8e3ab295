"""The whole path: a CloudEvent from a plain Kafka client → router → orchestrator → events.

Runs the router and the orchestrator as real processes (`headrace serve ...`), with the test
responder completing tasks, and checks what a user sees with `headrace start --wait` and
`headrace history --verify`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ingress_kit import deploy_yaml, produce_raw
from platform_kit import sequential
from procs import ServiceProcess
from support import wait_for
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.envelope import EventType
from headrace.errors import HeadraceError
from headrace.history import read_run
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = pytest.mark.integration

GREET = """
type: greet
version: 1
input_schema:
  type: object
  required: [name]
  properties: {name: {type: string}}
steps:
  - name: hello
    kind: succeed
    output: '{greeting: ("hello " + $input.name)}'
"""


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"HEADRACE_BOOTSTRAP": settings.bootstrap, "HEADRACE_TOPIC_PREFIX": settings.topic_prefix}
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def ended(settings: Settings, tenant: str, run_id: str) -> bool:
    try:
        records = read_run(settings, tenant, run_id).records
    except HeadraceError:
        return False
    return any(r.terminal for r in records)


def test_a_cloudevent_from_any_client_runs_to_a_verified_end(
    platform: Settings,
    orchestrators: Callable[..., ServiceProcess],
    responder: Responder,
    tmp_path: Path,
) -> None:
    deploy_yaml(platform, GREET, sequential(3))
    orchestrators("a").start()
    router = ServiceProcess(
        "router", ["-m", "headrace", "serve", "router", "--web-port", "0"], platform, tmp_path
    ).start()
    try:
        # what `kcat -P -H ce_...` sends: binary mode, no headrace code on the client side
        produce_raw(
            platform,
            json.dumps({"workflow": "seq3", "run_id": "e2e-1", "input": {"n": 1}}).encode(),
            key=b"acme/e2e-1",
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", b"e2e-event-1"),
                ("ce_source", b"/tests"),
                ("ce_type", b"io.headrace.run.start"),
                ("ce_tenant", b"acme"),
                ("content-type", b"application/json"),
            ],
        )
        code, out, err = cli(
            platform, "start", "greet", "-i", '{"name": "Ada"}', "--wait", "--timeout", "120s"
        )
        assert code == 0, err + router.log_tail()
        assert 'completed {"greeting": "hello Ada"}' in out

        wait_for(lambda: ended(platform, "acme", "e2e-1"), 120, "run acme/e2e-1 to end")
        code, out, _ = cli(platform, "history", "e2e-1", "--tenant", "acme", "--verify")
        assert code == 0
        assert "chain verified: 14 events" in out  # RunStarted, 4 per task step, RunCompleted
        kinds = [e.event.type for e in read_run(platform, "acme", "e2e-1").distinct() if e.event]
        assert kinds.count(EventType.TaskCompleted) == 3 and kinds[-1] is EventType.RunCompleted
    finally:
        assert router.stop(30) == 0, router.log_tail()
