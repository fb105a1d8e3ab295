"""Bulk control: filters select exactly the matching runs, through the query API."""

from __future__ import annotations

import json

import pytest
from control_kit import ApiProcess, Service, cli, deploy_yaml, start_run, wait_event

from headrace.core.envelope import EventType
from headrace.settings import Settings

pytestmark = pytest.mark.integration

NAPPER = """
type: {name}
version: 1
steps:
  - {{name: nap, kind: wait, duration: 1h}}
"""


def test_bulk_suspend_and_resume_touch_exactly_the_filtered_runs(
    platform: Settings, orchestrator: Service, api: ApiProcess
) -> None:
    deploy_yaml(platform, NAPPER.format(name="alpha"), NAPPER.format(name="beta"))
    orchestrator.start()
    api.start()
    runs = {
        (t, w): [start_run(platform, w, tenant=t) for _ in range(3)]
        for t in ("acme", "bigco")
        for w in ("alpha", "beta")
    }
    for (tenant, _), ids in runs.items():
        for r in ids:
            wait_event(platform, r, EventType.TimerArmed, tenant=tenant)

    dry = cli(
        platform,
        api,
        "suspend",
        "--type",
        "alpha",
        "--reason",
        "x",
        "--dry-run",
        "--format",
        "json",
    )
    assert dry.exit_code == 0, dry.output
    listed = json.loads(dry.stdout[: dry.stdout.rindex("]") + 1])
    expected = {(t, r) for (t, w), ids in runs.items() if w == "alpha" for r in ids}
    assert {(r["tenant"], r["run_id"]) for r in listed} == expected

    done = cli(platform, api, "suspend", "--type", "alpha", "--reason", "quota", "--as", "ops")
    assert done.exit_code == 0, done.output
    assert "sent to 6 run(s)" in done.output
    orchestrator.kill9()
    orchestrator.start()
    client = api.client()

    def statuses() -> dict[tuple[str, str], str]:
        rows = client.get("/runs", fresh=True, limit=100)["runs"]
        return {(r["tenant"], r["run_id"]): r["status"] for r in rows}

    for key in expected:
        view = client.wait_run(*key, lambda v: v["status"] == "suspended", timeout=90)
        assert view is not None and view["suspension"]["actor"] == "ops"
    now = statuses()
    assert {k for k, s in now.items() if s == "suspended"} == expected
    assert len(now) == 12

    back = cli(
        platform,
        api,
        "resume",
        "--type",
        "alpha",
        "--tenant",
        "acme",
        "--reason",
        "ok",
        "--wait",
        "--timeout",
        "90s",
    )
    assert back.exit_code == 0, back.output
    now = statuses()
    resumed = {(t, r) for (t, w), ids in runs.items() if (t, w) == ("acme", "alpha") for r in ids}
    assert {k for k, s in now.items() if s == "suspended"} == expected - resumed
    assert {k for k, s in now.items() if s == "running"} == set(now) - (expected - resumed)

    listed = cli(
        platform, api, "runs", "--type", "alpha", "--status", "suspended", "--format", "json"
    )
    assert listed.exit_code == 0, listed.output
    assert {(r["tenant"], r["run_id"]) for r in json.loads(listed.stdout)} == expected - resumed
    table = cli(platform, api, "runs", "--type", "alpha", "--tenant", "bigco")
    assert table.exit_code == 0 and "3 run(s)" in table.output and "suspended" in table.output

    nothing = cli(platform, api, "suspend", "--type", "gamma", "--reason", "x")
    assert nothing.exit_code == 0 and "sent to 0 run(s)" in nothing.output
    refused = cli(platform, api, "suspend", "--reason", "everything")
    assert refused.exit_code == 2 and "--type and/or --tenant" in refused.output
