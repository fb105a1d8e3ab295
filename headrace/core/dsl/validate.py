"""Semantic validation: what pydantic cannot see and what makes a definition undeployable.

The rules here run after the models accept a document: step names unique
across the whole definition, every reference names an existing step in the
scope it may reach, expressions compile with the variables available where
they stand, counts fit what they count. Each is a registered rule of phase
``validate`` (ids ``HR1xx``), so ``headrace lint`` reports them next to the
advice rules; :func:`validate` runs just these.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema

from headrace.core.dsl.context import LintContext, available
from headrace.core.dsl.findings import Finding, Path, Severity, format_path
from headrace.core.dsl.graph import COMPENSATIONS, MAIN, Scope, ScopeKind
from headrace.core.dsl.model import (
    ApprovalStep,
    Definition,
    JoinMode,
    ParallelStep,
    Quorum,
    Step,
)
from headrace.core.dsl.registry import RULES, Check, Issue, Phase, rule
from headrace.core.expr import compile_expr, free_variables
from headrace.errors import HeadraceError


def check(rule_id: str, name: str, doc: str) -> Callable[[Check], Check]:
    """Register a validation rule: an error that makes the definition undeployable."""
    return rule(rule_id, name, Severity.ERROR, doc, Phase.VALIDATE)


def _describe_scope(scope: Scope) -> str:
    if scope.kind is ScopeKind.MAIN:
        return "the main flow"
    if scope.kind is ScopeKind.COMPENSATIONS:
        return "`compensations`"
    if scope.kind is ScopeKind.BRANCH:
        return f"branch {scope.branch!r} of {scope.owner!r}"
    return f"the body of foreach {scope.owner!r}"


def references(step: Step) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """``(field path, target, label)`` of each step name ``step`` writes (``compensate`` too)."""
    if step.next is not None:
        yield ("next",), step.next, "next"
    for i, c in enumerate(step.catch):
        yield ("catch", i, "next"), c.next, f"catch[{i}]"
    if step.compensate is not None:
        yield ("compensate",), step.compensate, "compensate"
    choices = getattr(step, "choices", None)
    if choices is not None:
        for i, r in enumerate(choices):
            yield ("choices", i, "next"), r.next, f"choices[{i}]"
    for name in ("default", "on_timeout", "on_reject", "escalation"):
        target = getattr(step, name, None)
        if isinstance(target, str):
            yield (name,), target, name


@check("HR101", "duplicate-step-name", "step names must be unique across the whole definition")
def _duplicate_names(ctx: LintContext) -> Iterator[Issue]:
    first: dict[str, Path] = {}
    for loc in ctx.located:
        name = loc.step.name
        if name in first:
            yield (
                (*loc.path, "name"),
                f"step name {name!r} is already used at {format_path(first[name])} — names are "
                "unique across the definition (branches, foreach bodies and compensations "
                "included); rename one",
            )
        else:
            first[name] = loc.path


@check("HR102", "unknown-step", "a reference names a step that does not exist")
def _unknown_targets(ctx: LintContext) -> Iterator[Issue]:
    names = sorted(ctx.paths)
    if ctx.definition.start is not None and ctx.definition.start not in ctx.index:
        yield ("start",), f"`start` names {ctx.definition.start!r}, which is not a step"
    for loc in ctx.steps():
        for field_, target, label in references(loc.step):
            if target not in ctx.index:
                close = difflib.get_close_matches(target, names, n=1, cutoff=0.6)
                hint = f" — did you mean {close[0]!r}?" if close else " — check the spelling"
                yield (
                    (*loc.path, *field_),
                    f"step {loc.step.name!r}: `{label}` names {target!r}, "
                    f"which is not a step{hint}",
                )


@check("HR103", "step-out-of-scope", "a jump leaves the step list it is written in")
def _out_of_scope(ctx: LintContext) -> Iterator[Issue]:
    idx = ctx.index
    start = ctx.definition.start
    if start is not None and start in idx and idx.scope_of(start).id != MAIN:
        yield ("start",), f"`start` names {start!r}, which is not in the main flow"
    for loc in ctx.steps():
        name = loc.step.name
        if name not in idx:
            continue
        home = idx.scope_of(name)
        for field_, target, label in references(loc.step):
            if label == "compensate" or target not in idx:
                continue
            there = idx.scope_of(target)
            if there.id != home.id:
                siblings = ", ".join(repr(s) for s in home.steps if s != name) or "none"
                yield (
                    (*loc.path, *field_),
                    f"step {name!r}: `{label}` goes to {target!r} in {_describe_scope(there)}, "
                    f"but a jump stays in its own list ({_describe_scope(home)}: {siblings})",
                )


@check("HR104", "bad-compensate", "`compensate` must name a step listed in `compensations`")
def _compensate_target(ctx: LintContext) -> Iterator[Issue]:
    idx = ctx.index
    top = [s.name for s in ctx.definition.compensations]
    for loc in ctx.steps():
        target = loc.step.compensate
        if target is None or target not in idx:
            continue
        if idx.scope_of(target).id != COMPENSATIONS:
            listed = ", ".join(repr(n) for n in top) or "it is empty"
            yield (
                (*loc.path, "compensate"),
                f"step {loc.step.name!r}: `compensate` names {target!r}, which is not listed in "
                f"`compensations` ({listed}) — move {target!r} there",
            )


@check("HR105", "expression-invalid", "an expression does not compile or is refused")
def _expressions(ctx: LintContext) -> Iterator[Issue]:
    for site in ctx.sites():
        error = _compile_error(site.source, site.variables)
        if error is not None and not _is_undefined_variable(error):
            yield site.path, error.message


@check("HR106", "undefined-variable", "an expression reads a `$variable` not defined there")
def _undefined_variables(ctx: LintContext) -> Iterator[Issue]:
    for site in ctx.sites():
        error = _compile_error(site.source, site.variables)
        if error is None or not _is_undefined_variable(error):
            continue
        known = {"input", "run", *site.variables}
        missing = [v for v in free_variables(site.source) if v not in known] or ["?"]
        names = ", ".join(f"${v}" for v in missing)
        yield (
            site.path,
            f"{site.source!r} reads {names}, not defined here — available: "
            f"{', '.join(available(site.variables))} (and `.` is {site.dot})",
        )


def _compile_error(source: str, variables: tuple[str, ...]) -> HeadraceError | None:
    try:
        compile_expr(source, variables)
    except HeadraceError as exc:
        return exc
    return None


def _is_undefined_variable(error: HeadraceError) -> bool:
    return "is not defined" in error.message and "$" in error.message.split("compile:")[-1]


@check("HR107", "join-exceeds-branches", "an n_of_m join needs more branches than exist")
def _join_n(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ParallelStep):
        n = step.join.n
        if step.join.mode is JoinMode.N_OF_M and n is not None and n > len(step.branches):
            yield (
                (*path, "join", "n"),
                f"step {step.name!r}: join needs {n} branches but there are "
                f"{len(step.branches)} — lower `n` or add branches",
            )


@check(
    "HR108",
    "threshold-exceeds-assignees",
    "a threshold approval needs more approvers than it names",
)
def _threshold(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if step.quorum is not Quorum.THRESHOLD or step.threshold is None:
            continue
        if step.roles or step.assignees_from:
            continue  # the pool is only known at run time
        if step.threshold > len(step.assignees):
            yield (
                (*path, "threshold"),
                f"step {step.name!r}: threshold {step.threshold} but only "
                f"{len(step.assignees)} assignee(s) — it can never be met",
            )


@check("HR109", "input-schema-invalid", "`input_schema` (or a form) is not a valid JSON Schema")
def _schemas(ctx: LintContext) -> Iterator[Issue]:
    if ctx.definition.input_schema is not None:
        yield from _check_schema(ctx.definition.input_schema, ("input_schema",), "input_schema")
    for path, step in ctx.of_kind(ApprovalStep):
        if step.form is not None:
            yield from _check_schema(step.form, (*path, "form"), f"step {step.name!r}: form")


def _check_schema(schema: dict[str, Any], path: Path, what: str) -> Iterator[Issue]:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    for err in sorted(cls(cls.META_SCHEMA).iter_errors(schema), key=lambda e: list(e.path)):
        yield (
            (*path, *err.absolute_path),
            f"{what} is not a valid JSON Schema: {err.message}",
        )


@check("HR110", "duplicate-branch-name", "two branches of one parallel step share a name")
def _branch_names(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ParallelStep):
        seen: set[str] = set()
        for i, branch in enumerate(step.branches):
            if branch.name in seen:
                yield (
                    (*path, "branches", i, "name"),
                    f"step {step.name!r}: branch name {branch.name!r} is used twice — "
                    "branch names key the step's result; rename one",
                )
            seen.add(branch.name)


def validate(definition: Definition) -> list[Finding]:
    """Every error-level semantic finding about ``definition`` (paths, no line numbers)."""
    ctx = LintContext(definition)
    out: list[Finding] = []
    for r in sorted(RULES.values(), key=lambda r: r.id):
        if r.phase is Phase.VALIDATE:
            out.extend(r.run(ctx))
    return out
