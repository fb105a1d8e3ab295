"""Every rule of the registry fires on a definition that breaks it and stays quiet on its fix.

Each case is ``(rule id, bad document, good document, path the finding points at)``.
The documents go through the whole pipeline (YAML text → loader → model →
validation → lint), as ``headrace lint`` runs them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from headrace.core.dsl.findings import Severity, format_path
from headrace.core.dsl.lint import lint_text
from headrace.core.dsl.registry import Phase, all_rules


def task(name: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "task",
        "queue": "work",
        "timeouts": {"start_to_close": "10s"},
        **kw,
    }


def succeed(name: str = "done", **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "succeed", **kw}


def wait(name: str, duration: str = "1s", **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "wait", "duration": duration, **kw}


def definition(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "type": "demo",
        "version": 1,
        "input_schema": {"type": "object"},
        "steps": list(steps),
        **top,
    }


def parallel(name: str, *branches: tuple[str, list[dict[str, Any]]], **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "parallel",
        "branches": [{"name": b, "steps": s} for b, s in branches],
        **kw,
    }


def approval(name: str, **kw: Any) -> dict[str, Any]:
    base = {"name": name, "kind": "approval", "assignees": ["ann", "bob"], "expiry": "1d"}
    return {**base, **kw}


def signal(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "wait_signal", "signal": "go", "timeout": "1h", **kw}


LOOP: list[dict[str, Any]] = [
    {"name": "inc", "kind": "set", "value": "(.n // 0) + 1", "into": "n"},
    {
        "name": "again",
        "kind": "choice",
        "choices": [{"when": ".n < 3", "next": "inc"}],
        "default": "done",
    },
    succeed(),
]
LOOP_WITH_WAIT = [LOOP[0], wait("pause"), *LOOP[1:]]

VALID = definition(task("a"), succeed())

# (id, bad, good, path of the finding in the bad document)
CASES: list[tuple[str, Any, Any, str]] = [
    ("HR001", "type: demo\nsteps: [\n", VALID, "<root>"),
    ("HR001", "- just\n- a list\n", VALID, "<root>"),
    ("HR002", "type: a\ntype: b\nversion: 1\nsteps: [{name: x, kind: succeed}]\n", VALID, "type"),
    ("HR003", definition(task("a", retires=3)), VALID, "steps[0].retires"),
    ("HR004", definition({"name": "a", "kind": "task"}), VALID, "steps[0].queue"),
    ("HR005", definition({"name": "a", "kind": "tsk", "queue": "q"}), VALID, "steps[0].kind"),
    (
        "HR006",
        definition(task("a", retry={"max_attempts": 0})),
        VALID,
        "steps[0].retry.max_attempts",
    ),
    ("HR101", definition(task("a"), task("a")), VALID, "steps[1].name"),
    (
        "HR102",
        definition(task("a", next="nope"), succeed()),
        definition(task("a", next="done"), succeed()),
        "steps[0].next",
    ),
    (
        "HR103",
        definition(
            task("a", next="inner"),
            parallel("p", ("x", [succeed("inner")]), ("y", [succeed("other")])),
        ),
        definition(
            task("a", next="p"), parallel("p", ("x", [succeed("inner")]), ("y", [succeed("other")]))
        ),
        "steps[0].next",
    ),
    (
        "HR104",
        definition(task("a", compensate="done"), succeed()),
        definition(task("a", compensate="undo"), succeed(), compensations=[task("undo")]),
        "steps[0].compensate",
    ),
    (
        "HR105",
        definition(task("a", input=".a +"), succeed()),
        definition(task("a", input=".a + 1"), succeed()),
        "steps[0].input",
    ),
    ("HR105", definition(task("a", input='"\\(input)"'), succeed()), VALID, "steps[0].input"),
    (
        "HR106",
        definition(task("a", input="{x: $data}"), succeed()),
        definition(task("a", output="{x: $data.y, r: .}"), succeed()),
        "steps[0].input",
    ),
    (
        "HR107",
        definition(
            parallel(
                "p", ("x", [succeed("x1")]), ("y", [succeed("y1")]), join={"mode": "n_of_m", "n": 3}
            )
        ),
        definition(
            parallel(
                "p", ("x", [succeed("x1")]), ("y", [succeed("y1")]), join={"mode": "n_of_m", "n": 2}
            )
        ),
        "steps[0].join.n",
    ),
    (
        "HR108",
        definition(approval("ok", quorum="threshold", threshold=3), succeed()),
        definition(approval("ok", quorum="threshold", threshold=1), succeed()),
        "steps[0].threshold",
    ),
    ("HR109", definition(task("a"), input_schema={"type": "objekt"}), VALID, "input_schema.type"),
    (
        "HR110",
        definition(parallel("p", ("x", [succeed("x1")]), ("x", [succeed("x2")]))),
        definition(parallel("p", ("x", [succeed("x1")]), ("y", [succeed("x2")]))),
        "steps[0].branches[1].name",
    ),
    ("HR201", definition(task("a"), succeed(), task("orphan")), VALID, "steps[2]"),
    (
        "HR202",
        definition(
            {"name": "c", "kind": "choice", "choices": [{"when": ".x", "next": "done"}]}, succeed()
        ),
        definition(
            {
                "name": "c",
                "kind": "choice",
                "choices": [{"when": ".x", "next": "done"}],
                "default": "done",
            },
            succeed(),
        ),
        "steps[0]",
    ),
    ("HR203", definition(*LOOP), definition(*LOOP_WITH_WAIT), "steps[0]"),
    (
        "HR204",
        definition(task("a"), succeed(), compensations=[task("undo")]),
        definition(task("a", compensate="undo"), succeed(), compensations=[task("undo")]),
        "compensations[0]",
    ),
    ("HR205", definition(task("a"), succeed(next="a")), VALID, "steps[1].next"),
    (
        "HR206",
        definition(
            task(
                "a", catch=[{"errors": ["*"], "next": "done"}, {"errors": ["boom"], "next": "done"}]
            ),
            succeed(),
        ),
        definition(
            task(
                "a", catch=[{"errors": ["boom"], "next": "done"}, {"errors": ["*"], "next": "done"}]
            ),
            succeed(),
        ),
        "steps[0].catch[1]",
    ),
    (
        "HR207",
        definition(parallel("p", ("x", [succeed("x1")]))),
        definition(parallel("p", ("x", [succeed("x1")]), ("y", [succeed("y1")]))),
        "steps[0].branches",
    ),
    (
        "HR208",
        definition(
            {
                "name": "f",
                "kind": "foreach",
                "items": ".xs",
                "concurrency": 500,
                "steps": [task("t")],
            }
        ),
        definition({"name": "f", "kind": "foreach", "items": ".xs", "steps": [task("t")]}),
        "steps[0].concurrency",
    ),
    (
        "HR209",
        definition(task("a", compensate="undo"), compensations=[task("undo", compensate="undo")]),
        definition(task("a", compensate="undo"), compensations=[task("undo")]),
        "compensations[0].compensate",
    ),
    (
        "HR210",
        definition(task("a", catch=[{"errors": ["task.exausted"], "next": "done"}]), succeed()),
        definition(task("a", catch=[{"errors": ["task.exhausted"], "next": "done"}]), succeed()),
        "steps[0].catch[0].errors",
    ),
    (
        "HR211",
        definition(task("a", catch=[{"errors": ["cancelled"], "next": "done"}]), succeed()),
        definition(task("a", catch=[{"errors": ["timeout"], "next": "done"}]), succeed()),
        "steps[0].catch[0].errors",
    ),
    (
        "HR220",
        definition(task("a", retry={"max_attempts": None})),
        VALID,
        "steps[0].retry.max_attempts",
    ),
    ("HR221", definition({"name": "a", "kind": "task", "queue": "q"}), VALID, "steps[0].timeouts"),
    (
        "HR222",
        definition(
            task("a", compensate="undo"),
            compensations=[task("undo", idempotent=False, retry={"max_attempts": 1})],
        ),
        definition(task("a", compensate="undo"), compensations=[task("undo")]),
        "compensations[0].idempotent",
    ),
    (
        "HR222",
        definition(
            task("a", compensate="undo", idempotent=False, retry={"max_attempts": 1}),
            compensations=[task("undo")],
        ),
        definition(task("a", compensate="undo"), compensations=[task("undo")]),
        "steps[0].idempotent",
    ),
    (
        "HR223",
        definition(task("a", idempotent=False)),
        definition(task("a", idempotent=False, retry={"max_attempts": 1})),
        "steps[0].retry.max_attempts",
    ),
    (
        "HR224",
        definition(task("a", timeouts={"start_to_close": "30s", "heartbeat": "1m"})),
        definition(task("a", timeouts={"start_to_close": "30s", "heartbeat": "10s"})),
        "steps[0].timeouts.heartbeat",
    ),
    (
        "HR225",
        definition(task("a", retry={"initial_backoff": "10s", "max_backoff": "1s"})),
        VALID,
        "steps[0].retry.max_backoff",
    ),
    (
        "HR226",
        definition(task("a", retry={"max_attempts": 1, "non_retryable": ["x"]})),
        definition(task("a", retry={"max_attempts": 2, "non_retryable": ["x"]})),
        "steps[0].retry.non_retryable",
    ),
    (
        "HR227",
        definition(task("a", queue="http")),
        definition(task("a", queue="http", config={"method": "GET", "url": "http://x/y"})),
        "steps[0].config",
    ),
    (
        "HR228",
        definition(task("a", config={"headers": {"Authorization": "Bearer abc123"}})),
        definition(task("a", config={"headers": {"Accept": "application/json"}})),
        "steps[0].config.headers.Authorization",
    ),
    (
        "HR240",
        definition(wait("w", "0s"), succeed()),
        definition(wait("w", "1s"), succeed()),
        "steps[0]",
    ),
    (
        "HR241",
        definition(
            {"name": "s", "kind": "wait_signal", "signal": "go", "on_timeout": "done"}, succeed()
        ),
        definition(signal("s", on_timeout="done"), succeed()),
        "steps[0].on_timeout",
    ),
    (
        "HR242",
        definition(approval("ok", expiry=None, escalation="done"), succeed()),
        definition(approval("ok", escalation="done"), succeed()),
        "steps[0].escalation",
    ),
    (
        "HR243",
        definition(approval("ok", expiry=None, reminders={"every": "1h"}), succeed()),
        definition(approval("ok", expiry=None, reminders={"every": "1h", "max": 3}), succeed()),
        "steps[0].reminders",
    ),
    (
        "HR244",
        definition(wait("w", "2d"), succeed(), timeout="1d"),
        definition(wait("w", "2h"), succeed(), timeout="1d"),
        "steps[0].duration",
    ),
    (
        "HR245",
        definition(wait("w1", "1d"), wait("w2", "1d"), succeed(), sla={"within": "1d"}),
        definition(wait("w1", "1d"), succeed(), sla={"within": "2d"}),
        "sla.within",
    ),
    (
        "HR245",
        definition(
            parallel("p", ("x", [wait("w", "2h")]), ("y", [succeed("y1")]), sla={"within": "1h"})
        ),
        definition(
            parallel("p", ("x", [wait("w", "2h")]), ("y", [succeed("y1")]), sla={"within": "3h"})
        ),
        "steps[0].sla.within",
    ),
    (
        "HR246",
        definition({"name": "s", "kind": "wait_signal", "signal": "go"}, succeed()),
        definition(signal("s"), succeed()),
        "steps[0]",
    ),
    (
        "HR247",
        definition(approval("ok", expiry=None), succeed()),
        definition(approval("ok"), succeed()),
        "steps[0]",
    ),
    ("HR260", {k: v for k, v in VALID.items() if k != "input_schema"}, VALID, "<root>"),
    (
        "HR261",
        definition(task("a"), triggers=[{"event_type": "com.x.created"}]),
        definition(task("a"), triggers=[{"event_type": "com.x.created", "filter": ".data.ok"}]),
        "triggers[0]",
    ),
    (
        "HR262",
        definition(
            task("a"),
            triggers=[{"event_type": "e", "filter": ".a"}, {"event_type": "e", "filter": ".a"}],
        ),
        definition(
            task("a"),
            triggers=[{"event_type": "e", "filter": ".a"}, {"event_type": "e", "filter": ".b"}],
        ),
        "triggers[1]",
    ),
    (
        "HR263",
        definition(approval("ok", quorum="serial", roles=["boss"]), succeed()),
        definition(approval("ok", quorum="serial"), succeed()),
        "steps[0].roles",
    ),
    (
        "HR264",
        definition(approval("ok", veto=True), succeed()),
        definition(approval("ok", veto=True, quorum="threshold", threshold=1), succeed()),
        "steps[0].veto",
    ),
    (
        "HR265",
        definition(approval("ok", quorum="threshold", threshold=2), succeed()),
        definition(approval("ok", quorum="threshold", threshold=1), succeed()),
        "steps[0].threshold",
    ),
    (
        "HR266",
        definition({"name": "c", "kind": "call", "workflow": "demo"}, succeed()),
        definition({"name": "c", "kind": "call", "workflow": "other"}, succeed()),
        "steps[0].workflow",
    ),
    (
        "HR268",
        definition({"name": "f", "kind": "foreach", "items": ".xs", "steps": [task("t")]}),
        definition(
            {"name": "f", "kind": "foreach", "items": ".xs", "steps": [task("t")], "into": "r"}
        ),
        "steps[0]",
    ),
    (
        "HR267",
        definition(task("a", into="items[0]")),
        definition(task("a", into="items.first")),
        "steps[0].into",
    ),
]


def _text(doc: Any) -> str:
    return doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)


def _ids(cases: list[tuple[str, Any, Any, str]]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for rule_id, *_ in cases:
        seen[rule_id] = seen.get(rule_id, 0) + 1
        out.append(rule_id if seen[rule_id] == 1 else f"{rule_id}-{seen[rule_id]}")
    return out


@pytest.mark.parametrize(("rule_id", "bad", "good", "path"), CASES, ids=_ids(CASES))
def test_rule_fires_on_the_bad_definition_and_not_on_the_fixed_one(
    rule_id: str, bad: Any, good: Any, path: str
) -> None:
    hits = [f for f in lint_text(_text(bad), "bad.yaml") if f.rule == rule_id]
    assert hits, f"{rule_id} did not fire on:\n{_text(bad)}"
    assert format_path(hits[0].path) == path
    assert hits[0].file == "bad.yaml" and hits[0].line is not None
    assert all(f.rule != rule_id for f in lint_text(_text(good), "good.yaml"))


def test_every_rule_has_a_case() -> None:
    covered = {c[0] for c in CASES}
    missing = [r.id for r in all_rules() if r.id not in covered]
    assert not missing, f"rules without a test case: {missing}"


def test_there_are_at_least_25_lint_rules_and_every_rule_is_documented() -> None:
    rules = all_rules()
    assert len([r for r in rules if r.phase is Phase.LINT]) >= 25
    for r in rules:
        assert re.fullmatch(r"HR\d{3}", r.id)
        assert re.fullmatch(r"[a-z][a-z0-9-]+", r.name)
        assert r.doc and "\n" not in r.doc
        assert isinstance(r.severity, Severity)


def test_the_valid_base_definition_is_clean() -> None:
    assert lint_text(_text(VALID)) == []


def test_validation_runs_every_check_at_once() -> None:
    doc = definition(task("a", next="nope", input="$nope"), task("a"), succeed())
    rules = {f.rule for f in lint_text(_text(doc))}
    assert {"HR101", "HR102", "HR106"} <= rules


def test_unreachable_step_after_a_terminal_says_why() -> None:
    doc = definition(task("a"), succeed(), task("orphan"))
    [hit] = [f for f in lint_text(_text(doc)) if f.rule == "HR201"]
    assert "'orphan' is never reached" in hit.message
    assert "'done', is a succeed" in hit.message


def test_unreachable_container_is_reported_once_not_per_nested_step() -> None:
    doc = definition(
        succeed(), parallel("p", ("x", [task("x1"), task("x2")]), ("y", [succeed("y1")]))
    )
    hits = [f for f in lint_text(_text(doc)) if f.rule == "HR201"]
    assert [format_path(h.path) for h in hits] == ["steps[1]"]


def test_undefined_variable_lists_what_is_available() -> None:
    doc = definition(
        {
            "name": "f",
            "kind": "foreach",
            "items": ".xs",
            "steps": [task("t", input="{i: $index, x: $itme}")],
        }
    )
    [hit] = [f for f in lint_text(_text(doc)) if f.rule == "HR106"]
    assert "$itme" in hit.message
    assert "$index" in hit.message and "$item" in hit.message and "$input" in hit.message


def test_out_of_scope_jump_names_both_lists() -> None:
    doc = definition(
        task("a", next="inner"), parallel("p", ("x", [succeed("inner")]), ("y", [succeed("other")]))
    )
    [hit] = [f for f in lint_text(_text(doc)) if f.rule == "HR103"]
    assert "branch 'x' of 'p'" in hit.message and "the main flow" in hit.message


def test_unknown_step_suggests_the_closest_name() -> None:
    doc = definition(task("charge", next="refnd"), task("refund"), succeed())
    [hit] = [f for f in lint_text(_text(doc)) if f.rule == "HR102"]
    assert "did you mean 'refund'?" in hit.message


def test_loop_message_shows_the_cycle() -> None:
    [hit] = [f for f in lint_text(_text(definition(*LOOP))) if f.rule == "HR203"]
    assert "inc → again → inc" in hit.message


def test_a_task_with_retry_backoff_counts_as_a_pause_in_a_loop() -> None:
    steps = copy.deepcopy(LOOP)
    steps[0] = task("inc", output="(.n // 0) + 1")
    assert all(f.rule != "HR203" for f in lint_text(_text(definition(*steps))))
    steps[0]["retry"] = {"max_attempts": 1}
    assert any(f.rule == "HR203" for f in lint_text(_text(definition(*steps))))


def test_a_choice_never_falls_through_so_the_next_listed_step_is_unreachable() -> None:
    choice = {
        "name": "c",
        "kind": "choice",
        "choices": [{"when": ".x", "next": "done"}],
        "default": "done",
        "next": "after",
    }
    doc = definition(choice, task("after"), succeed())
    findings = lint_text(_text(doc))
    [ignored] = [f for f in findings if f.rule == "HR205"]
    assert format_path(ignored.path) == "steps[0].next" and "use `default:`" in ignored.message
    [orphan] = [f for f in findings if f.rule == "HR201"]
    assert "'after' is never reached" in orphan.message and "is a choice" in orphan.message
