"""Flags that mean the same everywhere, formats that are checked, API clients that are closed,
and the helpers the commands share (no broker: the API and Kafka are stood in for)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from headrace import control
from headrace.cli import approvals as approvals_cli
from headrace.cli import control as control_cli
from headrace.cli import drain as drain_cli
from headrace.cli.common import load_json
from headrace.cli.main import app
from headrace.core.envelope import Command
from headrace.errors import ErrorCode, HeadraceError

NOWHERE = {"HEADRACE_API_URL": "http://127.0.0.1:9", "COLUMNS": "200"}


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=NOWHERE)


class FakeApi:
    """An ApiClient stand-in: answers from ``runs``; remembers whether it was closed."""

    made: list[FakeApi] = []

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs_by_id = runs
        self.closed = False
        FakeApi.made.append(self)

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def run(self, tenant: str, run_id: str, **params: Any) -> dict[str, Any]:
        if run_id not in self.runs_by_id:
            raise HeadraceError(ErrorCode.RUN_NOT_FOUND, f"run not found: no run {run_id}")
        return self.runs_by_id[run_id]

    def runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return iter(self.runs_by_id.values())

    def approval(self, approval_id: str, tenant: str | None, **params: Any) -> dict[str, Any]:
        raise HeadraceError(ErrorCode.APPROVAL_CLOSED, f"approval {approval_id} is decided")

    def approvals(self, **filters: Any) -> Iterator[dict[str, Any]]:
        self.filters = filters
        return iter(())


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Command]:
    """Commands the CLI would produce (instead of producing them)."""
    out: list[Command] = []

    def send(settings: Any, commands: Any, **kw: Any) -> int:
        out.extend(commands)
        return len(out)

    monkeypatch.setattr(control, "send", send)
    return out


def fake_api(monkeypatch: pytest.MonkeyPatch, runs: dict[str, dict[str, Any]]) -> None:
    FakeApi.made = []
    for module in (control_cli, approvals_cli, drain_cli):
        monkeypatch.setattr(module, "ApiClient", lambda *a, **kw: FakeApi(runs))


RUN = {"tenant": "default", "run_id": "r1", "type": "order", "version": 1, "status": "running"}


# -- help and formats -----------------------------------------------------------------------------


def test_every_option_of_runs_has_help() -> None:
    shown = run("runs", "--help").output
    assert "only this tenant" in shown
    assert "a table, or JSON rows" in shown


@pytest.mark.parametrize(
    "args",
    [
        ["suspend", "--type", "order", "--reason", "x", "--dry-run", "--format", "yaml"],
        ["drain", "status", "--format", "jsn"],
        ["runs", "--format", "csv"],
    ],
)
def test_an_unknown_format_is_a_usage_error_not_a_table(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output


def test_a_dry_run_lists_json_when_asked(monkeypatch: pytest.MonkeyPatch, sent: list) -> None:
    fake_api(monkeypatch, {"r1": RUN})
    result = run("suspend", "--type", "order", "-r", "x", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output[: result.output.rindex("]") + 1])
    assert listed == [{"tenant": "default", "run_id": "r1", "type": "order", "status": "running"}]
    assert sent == []


# -- short flags ----------------------------------------------------------------------------------


def test_r_is_reason_everywhere_and_role_is_capital_r(
    monkeypatch: pytest.MonkeyPatch, sent: list[Command]
) -> None:
    fake_api(monkeypatch, {"r1": RUN})
    suspended = run("suspend", "r1", "-r", "maintenance")
    assert suspended.exit_code == 0, suspended.output
    # the API is down: --no-wait sends without looking the approval up
    monkeypatch.setattr(approvals_cli, "ApiClient", lambda *a, **kw: _Down())
    approved = run("approve", "r1:7", "--as", "ann", "-r", "looks fine", "-R", "risk", "--no-wait")
    assert approved.exit_code == 0, approved.output
    rejected = run("reject", "r1:7", "--as", "bob", "-m", "too risky", "--no-wait")
    assert rejected.exit_code == 0, rejected.output
    suspend, approve, reject = sent
    assert suspend.payload["reason"] == "maintenance"
    assert (approve.payload["comment"], approve.payload["roles"]) == ("looks fine", ["risk"])
    assert reject.payload["comment"] == "too risky"
    listed = run("approvals", "list", "-R", "risk", "-R", "audit")
    assert listed.exit_code == 0, listed.output
    assert FakeApi.made[-1].filters["role"] == ["risk", "audit"]


class _Down(FakeApi):
    def __init__(self) -> None:
        super().__init__({})

    def approval(self, approval_id: str, tenant: str | None, **params: Any) -> dict[str, Any]:
        raise HeadraceError(ErrorCode.API_UNAVAILABLE, "cannot reach the query API")


# -- API clients are closed -----------------------------------------------------------------------


def test_control_and_approvals_close_their_api_client(
    monkeypatch: pytest.MonkeyPatch, sent: list[Command]
) -> None:
    ended = {**RUN, "status": "completed"}
    fake_api(monkeypatch, {"r1": ended})
    one = run("cancel", "r1", "--reason", "x")
    assert one.exit_code == 1 and "already ended (completed)" in one.output
    missing = run("cancel", "r2", "--reason", "x")
    assert missing.exit_code == 1 and "run not found" in missing.output
    bulk = run("resume", "--type", "order", "--reason", "x")
    assert bulk.exit_code == 0, bulk.output
    decided = run("approve", "r1:7", "--as", "ann", "--reason", "x")
    assert decided.exit_code == 1 and "HR-APR-002" in decided.output
    assert len(FakeApi.made) == 4
    assert all(api.closed for api in FakeApi.made)


# -- JSON or @file --------------------------------------------------------------------------------


def test_json_arguments_come_inline_or_from_a_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"rate": 4.2}')
    bad.write_text("{rate")
    assert load_json('{"a": [1]}', "--data") == {"a": [1]}
    assert load_json(f"@{good}", "--data") == {"rate": 4.2}
    with pytest.raises(HeadraceError) as inline:
        load_json("{nope", "--data")
    assert inline.value.code is ErrorCode.INPUT_INVALID
    assert inline.value.message.startswith("--data is not JSON")
    with pytest.raises(HeadraceError) as in_file:
        load_json(f"@{bad}", "--input")
    assert in_file.value.message.startswith(f"{bad} (--input) is not JSON")
    with pytest.raises(HeadraceError) as missing:
        load_json(f"@{tmp_path / 'none.json'}", "--data")
    assert missing.value.code is ErrorCode.CONFIG_INVALID
    assert "--data: cannot read" in missing.value.message


def test_a_decision_with_data_that_is_not_json_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{rate")
    result = run("approve", "r1:7", "--as", "ann", "-r", "ok", "--data", f"@{bad}")
    assert result.exit_code == 2 and "is not JSON" in result.output
