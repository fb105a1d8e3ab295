"""The shipped examples lint clean, use most step kinds, and the linter survives any graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Severity
from headrace.core.dsl.lint import lint_file, lint_text
from headrace.core.dsl.load import load_file
from headrace.core.dsl.pydantic_errors import KINDS
from headrace.core.dsl.registry import RULES

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = [
    EXAMPLES / "order-processing" / "order-processing.yaml",
    EXAMPLES / "loan-approval" / "loan-approval.yaml",
    EXAMPLES / "loan-approval" / "kyc-check.yaml",
    EXAMPLES / "loan-approval" / "loan-servicing.yaml",
]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_lints_without_errors_or_warnings(path: Path) -> None:
    findings = lint_file(path)
    assert [f.format() for f in findings if f.severity is not Severity.INFO] == []


def test_examples_together_use_every_step_kind() -> None:
    kinds = set()
    for path in FILES:
        ctx = LintContext(load_file(path))
        kinds |= {loc.step.kind for loc in ctx.located}
    assert kinds == set(KINDS)


def test_the_called_child_workflow_is_shipped_beside_its_parent() -> None:
    parent = LintContext(load_file(FILES[1]))
    called = {loc.step.workflow for loc in parent.located if loc.step.kind == "call"}
    assert called == {load_file(FILES[2]).type}


def test_order_processing_has_the_saga_pieces() -> None:
    d = load_file(FILES[0])
    assert [t.event_type for t in d.triggers] == ["com.example.order.placed"]
    assert {s.name for s in d.compensations} == {
        "refund-payment",
        "release-inventory",
        "cancel-order",
    }
    ctx = LintContext(d)
    queues = {loc.step.queue for loc in ctx.located if loc.step.kind == "task"}
    assert queues == {"http", "orders"}  # the HTTP connector and the SDK worker (worker.py)


# -- robustness: any step graph, however wrong, gives findings and never a crash

NAMES = ["a", "b", "c", "d", "e", "f", "g", "h"]
TARGETS = st.sampled_from([*NAMES, "zz"])


def _step(draw: st.DrawFn, name: str, depth: int) -> dict[str, Any]:
    kinds = ["task", "set", "choice", "wait", "wait_signal", "approval", "succeed", "fail"]
    if depth < 2:
        kinds += ["parallel", "foreach"]
    kind = draw(st.sampled_from(kinds))
    step: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "task":
        step["queue"] = "q"
        step["retry"] = {"max_attempts": draw(st.sampled_from([None, 1, 3]))}
        step["idempotent"] = draw(st.booleans())
    elif kind == "set":
        step["value"] = draw(st.sampled_from([".", ".a + 1", "$item", "$nope", ".a +"]))
    elif kind == "choice":
        step["choices"] = [{"when": ".x", "next": draw(TARGETS)}]
        if draw(st.booleans()):
            step["default"] = draw(TARGETS)
    elif kind == "wait":
        step["duration"] = draw(st.sampled_from(["0s", "1s", "3d"]))
    elif kind == "wait_signal":
        step["signal"] = "s"
        if draw(st.booleans()):
            step["on_timeout"] = draw(TARGETS)
    elif kind == "approval":
        step["assignees"] = ["x"]
        step["quorum"] = "threshold"
        step["threshold"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            step["escalation"] = draw(TARGETS)
    elif kind == "fail":
        step["error"] = "boom"
    elif kind == "parallel":
        count = draw(st.integers(1, 2))
        step["branches"] = [
            {"name": f"br{i}", "steps": _steps(draw, depth + 1)} for i in range(count)
        ]
    elif kind == "foreach":
        step["items"] = ".xs"
        step["steps"] = _steps(draw, depth + 1)
    if draw(st.booleans()):
        step["next"] = draw(TARGETS)
    if draw(st.booleans()):
        step["catch"] = [
            {
                "errors": [draw(st.sampled_from(["*", "boom", "task.exhausted"]))],
                "next": draw(TARGETS),
            }
        ]
    if draw(st.booleans()):
        step["compensate"] = draw(TARGETS)
    return step


def _steps(draw: st.DrawFn, depth: int) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 3))
    return [_step(draw, draw(st.sampled_from(NAMES)), depth) for _ in range(count)]


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "fuzz", "version": 1, "steps": _steps(draw, 0)}
    if draw(st.booleans()):
        doc["compensations"] = _steps(draw, 1)
    if draw(st.booleans()):
        doc["start"] = draw(TARGETS)
    if draw(st.booleans()):
        doc["timeout"] = "1d"
        doc["sla"] = {"within": "2h"}
    return doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(definitions())
def test_lint_never_crashes_and_every_finding_is_placed(doc: dict[str, Any]) -> None:
    findings = lint_text(json.dumps(doc, indent=1), "fuzz.json")
    for f in findings:
        assert f.rule in RULES
        assert f.line is not None and f.file == "fuzz.json"
        assert f.message
