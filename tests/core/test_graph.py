"""The flow index: scopes, parents, successors, transfers, expressions."""

from __future__ import annotations

import pytest

from headrace.core.dsl.graph import (
    COMPENSATIONS,
    MAIN,
    ScopeKind,
    Transfer,
    build_index,
    flow_index,
    split_template,
)
from headrace.core.dsl.model import Definition
from headrace.errors import HeadraceError


def _definition() -> Definition:
    return Definition.model_validate(
        {
            "type": "g",
            "version": 1,
            "steps": [
                {
                    "name": "a",
                    "kind": "task",
                    "queue": "q",
                    "input": "{x: .y}",
                    "compensate": "undo",
                    "catch": [{"errors": ["*"], "next": "done"}],
                },
                {
                    "name": "route",
                    "kind": "choice",
                    "choices": [{"when": ".x > 1", "next": "fan"}],
                    "default": "each",
                },
                {
                    "name": "fan",
                    "kind": "parallel",
                    "branches": [
                        {
                            "name": "left",
                            "steps": [
                                {"name": "l1", "kind": "task", "queue": "q"},
                                {"name": "l2", "kind": "set", "value": "1", "end": True},
                                {"name": "l3", "kind": "set", "value": "2"},
                            ],
                        },
                        {
                            "name": "right",
                            "steps": [{"name": "r1", "kind": "wait", "duration": "1m"}],
                        },
                    ],
                },
                {
                    "name": "each",
                    "kind": "foreach",
                    "items": ".xs",
                    "collect": "$index",
                    "steps": [
                        {
                            "name": "body",
                            "kind": "task",
                            "queue": "q",
                            "output": "$item",
                            "next": "body2",
                        },
                        {"name": "body2", "kind": "set", "value": "1"},
                    ],
                },
                {
                    "name": "ws",
                    "kind": "wait_signal",
                    "signal": "s",
                    "timeout": "1h",
                    "on_timeout": "done",
                },
                {
                    "name": "ap",
                    "kind": "approval",
                    "assignees": ["x"],
                    "on_reject": "done",
                    "escalation": "done",
                },
                {"name": "bad", "kind": "fail", "error": "e", "message": "n=${ .n } at ${ .at }"},
                {"name": "done", "kind": "succeed"},
            ],
            "compensations": [
                {"name": "undo", "kind": "task", "queue": "q"},
                {"name": "undo2", "kind": "task", "queue": "q"},
            ],
        }
    )


def test_scopes_parents_and_positions() -> None:
    ix = build_index(_definition())
    assert ix.start == "a"
    assert ix.scope_of("a").id == MAIN and ix.scope_of("a").kind is ScopeKind.MAIN
    left = ix.scope_of("l1")
    assert (left.id, left.kind, left.owner, left.branch) == (
        "fan.left",
        ScopeKind.BRANCH,
        "fan",
        "left",
    )
    assert ix.branch_scope("fan", "right").steps == ("r1",)
    assert ix.body_scope("each").kind is ScopeKind.BODY and ix.first_step("each") == "body"
    assert ix.parent_of("body") is ix.step("each") and ix.parent_of("a") is None
    assert [s.name for s in ix.ancestors("l2")] == ["fan"]
    assert ix.scope_of("undo").id == COMPENSATIONS
    assert ix.info("body").in_foreach and not ix.info("l1").in_foreach


def test_successors_follow_next_end_terminal_kinds_and_compensations() -> None:
    ix = build_index(_definition())
    assert ix.successor("a") == "route"
    assert ix.successor("route") is None  # a choice goes only where its rules say
    assert ix.successor("l1") == "l2"
    assert ix.successor("l2") is None  # end: true
    assert ix.successor("l3") is None  # last of its list
    assert ix.successor("body") == "body2"
    assert ix.successor("bad") is None and ix.successor("done") is None
    assert ix.successor("undo") is None  # compensations do not fall through


def test_targets_list_every_transfer() -> None:
    ix = build_index(_definition())
    assert ix.targets("a") == [Transfer("next", "route", True), Transfer("catch[0]", "done")]
    assert ix.targets("route") == [Transfer("choices[0]", "fan"), Transfer("default", "each")]
    assert Transfer("on_timeout", "done") in ix.targets("ws")
    assert {t.label for t in ix.targets("ap")} == {"next", "on_reject", "escalation"}
    assert ix.targets("done") == []


def test_expressions_carry_their_variables_and_compile_once() -> None:
    ix = build_index(_definition())
    (site,) = ix.expressions("body")
    assert site.field == "output" and site.variables == ("data", "index", "item")
    assert [s.field for s in ix.expressions("each")] == ["items", "collect"]
    assert [s.source.strip() for s in ix.expressions("bad")] == [".n", ".at"]
    expr = ix.compiled("a", "input")
    assert expr is ix.compiled("a", "input")
    assert expr.evaluate({"y": 3}) == {"x": 3}
    with pytest.raises(KeyError):
        ix.compiled("a", "output")


def test_a_bad_expression_fails_only_when_compiled() -> None:
    d = Definition.model_validate(
        {"type": "g", "version": 1, "steps": [{"name": "s", "kind": "set", "value": "{broken"}]}
    )
    ix = build_index(d)
    assert ix.expressions("s")[0].source == "{broken"
    with pytest.raises(HeadraceError):
        ix.compiled("s", "value")


def test_duplicate_names_are_recorded_first_definition_wins() -> None:
    d = Definition.model_validate(
        {
            "type": "g",
            "version": 1,
            "steps": [
                {"name": "x", "kind": "set", "value": "1"},
                {
                    "name": "p",
                    "kind": "parallel",
                    "branches": [
                        {"name": "b", "steps": [{"name": "x", "kind": "set", "value": "2"}]}
                    ],
                },
            ],
        }
    )
    ix = build_index(d)
    assert ix.duplicates == ["x"] and ix.scope_of("x").id == MAIN


def test_flow_index_is_cached_per_definition() -> None:
    d = _definition()
    assert flow_index(d) is flow_index(d)
    assert flow_index(_definition()) is not flow_index(d)


def test_split_template() -> None:
    assert split_template("a ${ .x } b ${.y}") == [
        (False, "a "),
        (True, " .x "),
        (False, " b "),
        (True, ".y"),
    ]
    assert split_template("plain") == [(False, "plain")]
