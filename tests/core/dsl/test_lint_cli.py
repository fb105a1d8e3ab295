"""``headrace lint`` and ``headrace schema`` through the real Typer app."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.dsl import schema
from headrace.core.dsl.registry import all_rules

runner = CliRunner()

CLEAN = """\
type: clean
version: 1
input_schema: {type: object}
steps:
  - name: work
    kind: task
    queue: work
    timeouts: {start_to_close: 10s}
  - name: done
    kind: succeed
"""

BROKEN = """\
type: broken
version: 1
input_schema: {type: object}
steps:
  - name: work
    kind: task
    queue: work
    next: nowhere
  - name: done
    kind: succeed
"""

LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|info) "
    r"(?P<rule>HR\d{3}): .+ \[(?P<name>[a-z0-9-]+)\]$"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_clean_file_exits_zero_with_a_summary_on_stderr(tmp_path: Path) -> None:
    path = _write(tmp_path, "clean.yaml", CLEAN)
    result = runner.invoke(app, ["lint", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "0 errors, 0 warnings, 0 infos in 1 file" in result.stderr


def test_errors_print_compiler_style_lines_and_exit_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", BROKEN)
    result = runner.invoke(app, ["lint", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    errors = [m for m in matches if m and m["sev"] == "error"]
    assert [(m["file"], m["line"], m["col"], m["rule"], m["name"]) for m in errors] == [
        (str(path), "8", "5", "HR102", "unknown-step")
    ]
    [error_line] = [line for line in lines if " error " in line]
    assert error_line.endswith("check the spelling (at steps[0].next) [unknown-step]")
    # and two warnings: no timeout on the task (HR221), 'done' unreachable (HR201)
    assert "1 error, 2 warnings, 0 infos in 1 file" in result.stderr


def test_warnings_alone_do_not_fail(tmp_path: Path) -> None:
    path = _write(tmp_path, "warn.yaml", CLEAN.replace("    timeouts: {start_to_close: 10s}\n", ""))
    result = runner.invoke(app, ["lint", str(path)])
    assert result.exit_code == 0
    assert "warning HR221" in result.stdout


def test_several_files_and_json_output(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", CLEAN)
    b = _write(tmp_path, "b.json", json.dumps({"type": "b", "version": 1, "steps": []}))
    result = runner.invoke(app, ["lint", "--format", "json", str(a), str(b)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["errors"] == 1
    [finding] = report["findings"]
    assert finding["file"] == str(b) and finding["rule"] == "HR006"
    assert finding["path"] == "steps" and finding["line"] == 1
    assert set(finding) == {"file", "line", "column", "path", "rule", "name", "severity", "message"}


def test_select_and_ignore_filter_rules(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", BROKEN)
    ignored = runner.invoke(
        app,
        [
            "lint",
            str(path),
            "--ignore",
            "HR102",
            "--ignore",
            "task-without-timeout",
            "--ignore",
            "HR201",
        ],
    )
    assert ignored.exit_code == 0 and ignored.stdout == ""
    only = runner.invoke(app, ["lint", str(path), "--select", "unknown-step"])
    assert only.exit_code == 1 and only.stdout.count("\n") == 1
    unknown = runner.invoke(app, ["lint", str(path), "--select", "HR999"])
    assert unknown.exit_code == 2 and "no such lint rule: HR999" in unknown.stderr


def test_quiet_shows_errors_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", BROKEN)
    result = runner.invoke(app, ["lint", "-q", str(path)])
    assert result.exit_code == 1
    assert result.stdout.count("\n") == 1 and "error HR102" in result.stdout
    assert result.stderr == ""


def test_missing_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lint", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: error HR001: cannot read the file" in result.stdout


def test_no_files_is_a_usage_error() -> None:
    result = runner.invoke(app, ["lint"])
    assert result.exit_code == 2 and "name at least one definition file" in result.stderr


def test_rules_lists_every_rule_with_severity_and_doc() -> None:
    result = runner.invoke(app, ["lint", "--rules"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    rules = all_rules()
    assert len(lines) == len(rules)
    for line, rule in zip(lines, rules, strict=True):
        assert line.startswith(f"{rule.id}  {rule.severity}")
        assert rule.name in line and line.endswith(rule.doc)
    as_json = json.loads(runner.invoke(app, ["lint", "--rules", "-f", "json"]).stdout)
    assert {r["id"] for r in as_json} == {r.id for r in rules}


def test_schema_prints_and_checks() -> None:
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0 and printed.stdout == schema.render()
    checked = runner.invoke(app, ["schema", "--check"])
    assert checked.exit_code == 0, checked.output
