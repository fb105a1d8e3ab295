"""An HTTP call that keeps failing parks in ``tasks.http.dlq``; fixed and redriven, the run ends.

The operator's path, with the real CLI: the endpoint answers 500 on every
attempt, the task exhausts its retries and — with ``on_exhausted: park`` — the
run waits at the step instead of failing; ``headrace dlq list`` shows the entry
with its attempts; the endpoint is fixed; ``headrace dlq redrive ID`` schedules
the step again (fresh attempts, the same idempotency key) and the run completes.
"""

from __future__ import annotations

import json
import uuid

import pytest
from examples_kit import (
    FlakyEndpoint,
    Platform,
    deploy_text,
    events,
    of,
    start_runs,
    status,
    wait_ended,
)
from support import wait_for

from headrace.core.envelope import EventType

pytestmark = pytest.mark.integration

E = EventType

LEDGER = """
type: ledger-post
version: 1
steps:
  - name: post-entry
    kind: task
    queue: http
    config: {{method: POST, url: "http://127.0.0.1:{port}/ledger", response: .body}}
    input: "{{amount: .amount}}"
    into: ledger
    retry: {{max_attempts: 3, initial_backoff: 200ms, jitter: 0, on_exhausted: park}}
    timeouts: {{start_to_close: 10s}}
  - name: done
    kind: succeed
"""


def test_a_failing_endpoint_parks_the_task_and_a_redrive_completes_the_run(
    platform: Platform,
) -> None:
    settings = platform.settings
    endpoint = FlakyEndpoint()
    try:
        deploy_text(settings, LEDGER.format(port=endpoint.port))
        run_id = f"ledger-{uuid.uuid4().hex[:6]}"
        start_runs(settings, "ledger-post", {run_id: {"amount": 42}})

        # Three 500s: the task is dead-lettered and the run waits, parked.
        def parked() -> list[object] | None:
            evs = events(settings, run_id)
            return evs if of(evs, E.TaskDeadLettered) else None

        evs = wait_for(parked, 60, f"{run_id} to park its task", interval=0.2)
        assert not of(evs, E.RunFailed) and not of(evs, E.StepFailed)
        failures = of(evs, E.TaskFailed, "post-entry")
        assert [f.payload["error"]["code"] for f in failures] == ["http.5xx"] * 3
        dead_id = of(evs, E.TaskDeadLettered)[0].payload["task_id"]

        def listed() -> list[dict[str, object]] | None:
            out = platform.cli("dlq", "list", "--queue", "http", "--json")
            rows = [json.loads(line) for line in out.splitlines() if line.strip()]
            return rows or None

        rows = wait_for(listed, 30, "the entry in `headrace dlq list`", interval=0.5)
        assert [(r["id"], r["state"], r["attempts"]) for r in rows] == [(dead_id, "parked", 3)]
        assert str(rows[0]["error"]).startswith("http.5xx")

        # The operator fixes the ledger and redrives the task.
        endpoint.broken = False
        out = platform.cli("dlq", "redrive", dead_id, "--reason", "ledger db restarted")
        assert f"redrive requested: {dead_id}" in out
        evs = wait_ended(settings, [run_id], 60, platform)[run_id]
        assert status(evs) == "completed"
        [redriven] = of(evs, E.TaskRedriven)
        assert redriven.payload["task_id"] == dead_id
        assert redriven.payload["reason"] == "ledger db restarted"
        output = of(evs, E.RunCompleted)[0].payload["output"]
        assert output["ledger"] == {"entry": 4} and output["amount"] == 42
        # Four deliveries of one step visit, one idempotency key.
        assert endpoint.keys == [f"{run_id}/post-entry"] * 4
    finally:
        endpoint.close()
