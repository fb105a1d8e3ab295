"""The loader: JSON/YAML in, a Definition out, every problem at file:line:col with a fix."""

from __future__ import annotations

import json
import textwrap

import pytest

from headrace.core.dsl.findings import Severity, format_path
from headrace.core.dsl.load import load, load_definition, read_document
from headrace.core.dsl.model import Definition, WaitStep
from headrace.errors import ErrorCode, HeadraceError

YAML = textwrap.dedent(
    """\
    type: order
    version: 1
    input_schema: {type: object}
    steps:
      - name: charge
        kind: task
        queue: payments
        retry:
          max_attempts: 0
        timeouts: {start_to_close: 30s}
      - name: done
        kind: succeed
    """
)


def _messages(text: str, file: str = "def.yaml") -> list[str]:
    return [f.format() for f in load(text, file).findings]


def test_yaml_error_points_at_file_line_col_and_json_path() -> None:
    [finding] = load(YAML, "order.yaml").findings
    assert (finding.file, finding.line, finding.column) == ("order.yaml", 9, 7)
    assert format_path(finding.path) == "steps[0].retry.max_attempts"
    assert finding.format().startswith("order.yaml:9:7: error HR006: ")
    assert "step 'charge' (task)" in finding.message and "at least 1" in finding.message


def test_source_map_records_every_key_and_list_item() -> None:
    doc = read_document(YAML, "x.yaml")
    pos = doc.source.positions
    assert pos[("type",)] == (1, 1)
    assert pos[("steps", 0)] == (5, 5)
    assert pos[("steps", 0, "name")] == (5, 5)
    assert pos[("steps", 0, "retry", "max_attempts")] == (9, 7)
    assert pos[("steps", 0, "timeouts", "start_to_close")] == (10, 16)
    assert pos[("steps", 1, "kind")] == (12, 5)


def test_a_missing_path_falls_back_to_its_nearest_ancestor() -> None:
    doc = read_document(YAML)
    assert doc.source.locate(("steps", 1, "output")) == (11, 5)


def test_json_keeps_positions_too_even_where_yaml_could_not_read_it() -> None:
    text = (
        '{\n\t"type": "order",\n\t"version": 1,\n\t"steps": [\n'
        '\t\t{"name": "a", "kind": "wait"}\n\t]\n}'
    )
    result = load(text, "order.json")
    [finding] = result.findings
    assert format_path(finding.path) == "steps[0]"
    assert (finding.line, finding.column) == (5, 3)
    assert "exactly one of 'duration', 'until' or 'business'" in finding.message


def test_format_is_taken_from_the_content_when_the_name_does_not_tell() -> None:
    body = {"type": "t", "version": 1, "steps": [{"name": "a", "kind": "succeed"}]}
    assert load(json.dumps(body)).ok
    assert load("type: t\nversion: 1\nsteps: [{name: a, kind: succeed}]\n").ok


def test_yaml_is_read_with_yaml_12_scalars() -> None:
    doc = read_document("a: on\nb: no\nc: 2026-01-02\nd: 010\ne: true\nf: 1.5\ng: 12\n")
    assert doc.data == {
        "a": "on",
        "b": "no",
        "c": "2026-01-02",
        "d": "010",
        "e": True,
        "f": 1.5,
        "g": 12,
    }


def test_a_date_in_until_stays_a_string() -> None:
    text = "type: t\nversion: 1\nsteps:\n  - {name: w, kind: wait, until: 2026-01-02}\n"
    definition = load(text).definition
    assert definition is not None
    step = definition.steps[0]
    assert isinstance(step, WaitStep) and step.until == "2026-01-02"


def test_duplicate_keys_are_errors_in_yaml_and_json() -> None:
    [dup] = load("type: a\nversion: 1\ntype: b\nsteps: [{name: x, kind: succeed}]\n").findings
    assert dup.rule == "HR002" and dup.line == 3 and "first on line 1" in dup.message
    [dup] = load('{"type": "a", "version": 1, "type": "b", "steps": []}', "d.json").findings
    assert dup.rule == "HR002" and format_path(dup.path) == "type"


def test_syntax_errors_carry_their_position() -> None:
    [f] = load("type: a\nsteps: [\n  {name: x\n", "bad.yaml").findings
    assert f.rule == "HR001" and f.line is not None and "not valid YAML" in f.message
    [f] = load('{"type": "a",\n "version": }', "bad.json").findings
    assert f.rule == "HR001" and (f.line, f.column) == (2, 13) and "not valid JSON" in f.message


def test_empty_and_non_mapping_documents_are_explained() -> None:
    assert "empty" in load("", "e.yaml").findings[0].message
    assert "not a list" in load("- a\n", "l.yaml").findings[0].message


def test_all_problems_are_reported_at_once_one_finding_each() -> None:
    text = textwrap.dedent(
        """\
        type: Order
        version: 0
        steps:
          - {name: a, kind: task}
          - {name: b, kind: tasks, queue: q}
          - {name: c, kind: wait, duration: 5}
          - {name: d, kind: task, queue: q, retires: 2}
        """
    )
    findings = load(text, "many.yaml").findings
    where = {(f.rule, format_path(f.path)) for f in findings}
    assert where == {
        ("HR006", "type"),
        ("HR006", "version"),
        ("HR004", "steps[0].queue"),
        ("HR005", "steps[1].kind"),
        ("HR006", "steps[2].duration"),
        ("HR003", "steps[3].retires"),
    }
    assert len(findings) == len(where)
    assert [f.line for f in findings] == sorted(f.line or 0 for f in findings)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("{name: a, kind: task, queue: q, retires: 2}", "did you mean 'retry'?"),
        ("{name: a, kind: task, queue: q, choices: []}", "'choices' is a field of choice steps"),
        ("{name: a, kind: tsak, queue: q}", "did you mean 'task'? the kinds are: task, choice"),
        ("{name: a, queue: q}", "no 'kind' — add 'kind: <one of task, choice"),
        ("{name: a, kind: task}", "missing required field 'queue'"),
        ("{name: a, kind: wait, duration: 30}", "duration 30 has no unit — write it as a string"),
        ("{name: a, kind: wait, duration: 3 days}", "'3 days' is not a duration"),
        ("{name: 1a, kind: succeed}", "not a valid name — start with a letter"),
        (
            "{name: p, kind: parallel, join: {mode: al}, "
            "branches: [{name: x, steps: [{name: y, kind: succeed}]}]}",
            "expected 'all', 'any' or 'n_of_m' — did you mean 'all'?",
        ),
        ("{name: a, kind: task, queue: q, priority: 12}", "'priority' is 12 but must be at most 9"),
        (
            "{name: a, kind: task, queue: q, idempotent: maybe}",
            "'idempotent' must be true or false",
        ),
        (
            "{name: a, kind: approval, roles: [x], quorum: threshold}",
            "quorum 'threshold' needs 'threshold'",
        ),
    ],
)
def test_model_errors_say_what_is_wrong_and_how_to_fix_it(snippet: str, expected: str) -> None:
    text = f"type: t\nversion: 1\nsteps:\n  - {snippet}\n"
    messages = _messages(text)
    assert any(expected in m for m in messages), messages
    assert all(m.startswith("def.yaml:4:") for m in messages), messages


def test_top_level_missing_field_names_the_definition() -> None:
    [f] = load("type: t\nsteps: [{name: a, kind: succeed}]\n").findings
    assert f.message == "a definition needs the field 'version' — add it"


def test_semantic_errors_come_with_positions_through_load() -> None:
    text = "type: t\nversion: 1\nsteps:\n  - name: a\n    kind: task\n    queue: q\n"
    text += "    next: nope\n"
    [f] = [f for f in load(text, "s.yaml").findings if f.severity is Severity.ERROR]
    assert (f.rule, f.line, f.column) == ("HR102", 7, 5)


def test_load_definition_returns_the_model_or_raises_with_every_error() -> None:
    ok = load_definition("type: t\nversion: 1\nsteps: [{name: a, kind: succeed}]\n")
    assert isinstance(ok, Definition) and ok.key == "t@1"
    with pytest.raises(HeadraceError) as info:
        load_definition(
            "type: t\nversion: 1\nsteps:\n  - {name: a, kind: succeed, next: b}\n"
            "  - {name: a, kind: succeed}\n",
            "x.yaml",
        )
    assert info.value.code is ErrorCode.DEFINITION_INVALID
    assert "x.yaml has 2 error(s)" in info.value.message
    assert "HR101" in info.value.message and "HR102" in info.value.message


def test_load_does_not_report_lint_warnings() -> None:
    result = load("type: t\nversion: 1\nsteps: [{name: a, kind: task, queue: q}]\n")
    assert result.ok and result.findings == []


def test_a_misspelt_required_field_is_one_problem_not_two() -> None:
    [f] = load("type: t\nversion: 1\nstpes: [{name: a, kind: succeed}]\n").findings
    assert f.rule == "HR003" and "did you mean 'steps'?" in f.message
    [f] = load("type: t\nversion: 1\nsteps: [{name: a, kind: task, queu: q}]\n").findings
    assert f.rule == "HR003" and "did you mean 'queue'?" in f.message
