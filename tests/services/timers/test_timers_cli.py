"""`headrace calendar` and `headrace schedule` against a real broker."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("HEADRACE_BOOTSTRAP", platform.bootstrap)
    monkeypatch.setenv("HEADRACE_TOPIC_PREFIX", platform.topic_prefix)
    return CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True) -> str:
    result = cli.invoke(app, list(args))
    text = result.output + (str(result.exception) if result.exception else "")
    assert (result.exit_code == 0) == ok, text
    return text


def test_calendar_set_show_list_due_delete(cli: CliRunner) -> None:
    run(
        cli,
        "calendar",
        "set",
        "paris",
        "--tz",
        "Europe/Paris",
        "--hours",
        "mon-fri=09:00-12:30,13:30-17:30",
        "--holiday",
        "2026-12-25",
        "--half-day",
        "2026-12-24=09:00-13:00",
    )
    shown = json.loads(run(cli, "calendar", "show", "paris", "--format", "json"))
    assert shown["hours"]["mon"] == "09:00-12:30,13:30-17:30"
    assert shown["holidays"] == ["2026-12-25"]
    assert "paris" in run(cli, "calendar", "list")
    due = run(cli, "calendar", "due", "paris", "--duration", "16h", "--from", "2026-12-23T15:00")
    assert "2026-12-29 11:00:00" in due
    assert "2026-12-28 15:00:00" in run(
        cli, "calendar", "due", "paris", "--days", "2", "--from", "2026-12-23T15:00"
    )
    run(cli, "calendar", "delete", "paris")
    assert "no calendar 'paris'" in run(cli, "calendar", "show", "paris", ok=False)


def test_calendar_set_refuses_a_bad_calendar(cli: CliRunner) -> None:
    out = run(
        cli, "calendar", "set", "bad", "--tz", "Mars/Base", "--hours", "mon=17:00-09:00", ok=False
    )
    assert "Mars/Base" in out and "ends before it starts" in out


def test_schedule_lifecycle(cli: CliRunner) -> None:
    run(
        cli,
        "schedule",
        "create",
        "nightly",
        "--workflow",
        "order",
        "--cron",
        "0 2 * * *",
        "--tz",
        "Europe/Paris",
        "--input",
        '{"a": 1}',
        "--overlap",
        "buffer_one",
    )
    assert "exists" in run(
        cli, "schedule", "create", "nightly", "--workflow", "order", "--cron", "0 3 * * *", ok=False
    )
    run(
        cli,
        "schedule",
        "create",
        "nightly",
        "--workflow",
        "order",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Paris",
        "--update",
    )
    [spec] = json.loads(run(cli, "schedule", "list", "--format", "json"))
    assert (spec["cron"], spec["overlap"], spec["paused"]) == ("0 3 * * *", "skip", False)
    run(cli, "schedule", "pause", "nightly")
    [spec] = json.loads(run(cli, "schedule", "list", "--format", "json"))
    assert spec["paused"] is True
    run(cli, "schedule", "resume", "nightly")
    assert "started run nightly-manual-" in run(cli, "schedule", "trigger", "nightly")
    run(cli, "schedule", "delete", "nightly")
    assert json.loads(run(cli, "schedule", "list", "--format", "json")) == []
    bad = run(cli, "schedule", "create", "x", "--workflow", "w", "--cron", "0 25 * * *", ok=False)
    assert "hour field: 25 is outside 0-23" in bad
