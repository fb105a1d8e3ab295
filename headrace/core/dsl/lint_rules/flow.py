"""Lint rules about control flow: reachability, loops, choices, catches, compensations."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from headrace.core.decider.errors import (
    BUILTIN_CODES,
    CANCELLED,
    INPUT_INVALID,
    LOOP_LIMIT,
    catches,
)
from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Severity
from headrace.core.dsl.graph import COMPENSATIONS, TERMINAL_KINDS
from headrace.core.dsl.model import (
    ApprovalStep,
    CallStep,
    ChoiceStep,
    ForeachStep,
    ParallelStep,
    Step,
    TaskStep,
    WaitSignalStep,
    WaitStep,
)
from headrace.core.dsl.registry import Issue, rule
from headrace.core.durations import parse_duration

WARN, INFO = Severity.WARNING, Severity.INFO


# Kinds whose flow never falls through to the step listed after them.
_ROUTING = {
    "succeed": "is a succeed",
    "fail": "is a fail",
    "choice": "is a choice (it goes only where its rules and default say)",
}


@rule("HR201", "unreachable-step", WARN, "no run can reach this step")
def _unreachable(ctx: LintContext) -> Iterator[Issue]:
    idx = ctx.index
    for loc in ctx.steps():
        name = loc.step.name
        if name in ctx.reachable or name not in idx:
            continue
        info = idx.info(name)
        if info.scope.id == COMPENSATIONS:
            continue  # HR204 says it better
        if info.scope.owner is not None and info.scope.owner not in ctx.reachable:
            continue  # its parallel/foreach is unreachable: reported once, there
        why = ""
        if info.position > 0:
            before = idx.step(info.scope.steps[info.position - 1])
            if before.kind in _ROUTING or before.end or before.next is not None:
                otherwise = "has `end: true`" if before.end else f"jumps to {before.next!r}"
                reason = _ROUTING.get(before.kind, otherwise)
                why = f": the step before it, {before.name!r}, {reason}, and nothing jumps here"
        yield (
            loc.path,
            f"step {name!r} is never reached{why or ' — nothing leads to it'}; "
            "remove it or point a `next`, choice or catch at it",
        )


@rule("HR202", "choice-without-default", WARN, "a choice has no `default` for when no rule holds")
def _choice_default(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ChoiceStep):
        if step.default is not None:
            continue
        yield (
            path,
            f"choice {step.name!r} has no default: when no rule holds, the step fails with "
            "'choice.unmatched' — add `default:` to say where to go",
        )


def _pauses(step: Step) -> bool:
    """Whether the step waits for the outside world for a while before it goes on."""
    if isinstance(step, WaitStep):
        return not (step.duration is not None and parse_duration(step.duration) == 0)
    if isinstance(step, WaitSignalStep | ApprovalStep | CallStep):
        return True
    if isinstance(step, TaskStep):
        retries = step.retry.max_attempts is None or step.retry.max_attempts > 1
        return retries and parse_duration(step.retry.initial_backoff) > 0
    return False


def _cycles(ctx: LintContext) -> Iterator[list[str]]:
    """Strongly connected components with a cycle, per scope (Tarjan, iterative)."""
    idx = ctx.index
    for scope in idx.scopes.values():
        members = [n for n in scope.steps if n in idx and idx.scope_of(n).id == scope.id]
        edges = {n: [t.target for t in idx.targets(n) if t.target in members] for n in members}
        order: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        for root in members:
            if root in order:
                continue
            work = [(root, 0)]
            while work:
                node, i = work.pop()
                if i == 0:
                    order[node] = low[node] = len(order)
                    stack.append(node)
                    on_stack.add(node)
                if i < len(edges[node]):
                    work.append((node, i + 1))
                    nxt = edges[node][i]
                    if nxt not in order:
                        work.append((nxt, 0))
                    elif nxt in on_stack:
                        low[node] = min(low[node], order[nxt])
                    continue
                if low[node] == order[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1 or node in edges[node]:
                        yield sorted(comp, key=members.index)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])


@rule(
    "HR203",
    "loop-without-wait",
    WARN,
    "a cycle of steps has no wait, wait_signal, approval, call or task with retry backoff",
)
def _loops(ctx: LintContext) -> Iterator[Issue]:
    idx = ctx.index
    for comp in _cycles(ctx):
        if any(_pauses(idx.step(n)) for n in comp):
            continue
        ring = " → ".join([*comp, comp[0]])
        yield (
            ctx.path(comp[0]),
            f"loop {ring} never pauses: it runs as fast as the engine and its workers go — "
            "add a `wait` step to the loop (or a wait_signal/approval), or bound it",
        )


@rule("HR204", "unused-compensation", WARN, "a step in `compensations` is never used")
def _unused_compensations(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        name = loc.step.name
        top = name in ctx.index and ctx.index.scope_of(name).id == COMPENSATIONS
        if top and name not in ctx.reachable:
            yield (
                loc.path,
                f"compensation {name!r} is never used — no step names it in `compensate`; "
                "reference it or remove it",
            )


@rule("HR205", "ignored-next", WARN, "`next` on a step that ignores it, or `next` with `end`")
def _ignored_next(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        step = loc.step
        if step.kind == "choice" and step.next is not None:
            yield (
                (*loc.path, "next"),
                f"choice {step.name!r} goes only where its rules and `default` say, so `next` "
                "is ignored — use `default:` instead",
            )
        elif step.kind in TERMINAL_KINDS and step.next is not None:
            yield (
                (*loc.path, "next"),
                f"{step.kind} step {step.name!r} ends its flow, so `next` is ignored — remove it",
            )
        elif step.next is not None and step.end:
            yield (
                (*loc.path, "end"),
                f"step {step.name!r} has both `next` and `end: true`; `next` wins — remove one",
            )


@rule("HR206", "shadowed-catch", WARN, "a catch can never match: an earlier one takes its errors")
def _catch_order(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        taken: list[str] = []
        for i, c in enumerate(loc.step.catch):
            dead = [e for e in c.errors if any(_covers(p, e) for p in taken)]
            if dead and len(dead) == len(c.errors):
                yield (
                    (*loc.path, "catch", i),
                    f"step {loc.step.name!r}: catch[{i}] never runs — earlier catches already "
                    f"take {', '.join(repr(d) for d in dead)}; put specific codes first, '*' last",
                )
            taken.extend(c.errors)


def _covers(pattern: str, entry: str) -> bool:
    """Whether every code ``entry`` matches is matched by ``pattern`` already."""
    if pattern == entry or pattern == "*":
        return True
    if pattern.endswith(".*"):
        return entry.startswith(pattern[:-1])
    return entry != "*" and not entry.endswith(".*") and catches(pattern, entry)


_NAMESPACES = {code.split(".")[0] + "." for code in BUILTIN_CODES if "." in code}
_UNCATCHABLE = {CANCELLED, INPUT_INVALID, LOOP_LIMIT}


@rule(
    "HR210", "unknown-error-code", WARN, "a catch names a built-in-looking code that does not exist"
)
def _unknown_codes(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        for i, c in enumerate(loc.step.catch):
            for code in c.errors:
                if code == "*" or code in BUILTIN_CODES or code.endswith(".*"):
                    continue
                if any(code.startswith(ns) for ns in _NAMESPACES) or code in _TYPO_BAIT:
                    close = difflib.get_close_matches(code, BUILTIN_CODES, n=1, cutoff=0.6)
                    hint = f" — did you mean {close[0]!r}?" if close else ""
                    yield (
                        (*loc.path, "catch", i, "errors"),
                        f"step {loc.step.name!r}: {code!r} is not a built-in error code{hint} "
                        f"(built-ins: {', '.join(BUILTIN_CODES)})",
                    )


_TYPO_BAIT = {"timeout", "timed_out", "timedout", "cancel", "canceled"}


@rule("HR211", "uncatchable-error", WARN, "a catch lists a run-level code that no catch receives")
def _uncatchable(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        for i, c in enumerate(loc.step.catch):
            for code in c.errors:
                if code in _UNCATCHABLE:
                    yield (
                        (*loc.path, "catch", i, "errors"),
                        f"step {loc.step.name!r}: {code!r} ends the run itself and never reaches "
                        "a step's catch — remove it",
                    )


@rule(
    "HR207", "single-branch-parallel", INFO, "a parallel step with one branch is a plain sequence"
)
def _single_branch(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ParallelStep):
        if len(step.branches) == 1:
            yield (
                (*path, "branches"),
                f"parallel {step.name!r} has one branch — inline its steps unless more will come",
            )


FOREACH_CONCURRENCY_HINT = 100


@rule("HR208", "foreach-high-concurrency", INFO, "a foreach runs more than 100 iterations at once")
def _foreach_concurrency(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ForeachStep):
        if step.concurrency > FOREACH_CONCURRENCY_HINT:
            yield (
                (*path, "concurrency"),
                f"foreach {step.name!r} runs up to {step.concurrency} iterations at once; every "
                "running iteration is state in the run and load on its services — "
                f"keep it at {FOREACH_CONCURRENCY_HINT} or below unless you need more",
            )


@rule("HR209", "compensate-in-compensation", WARN, "a compensation step declares `compensate`")
def _nested_compensate(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        name = loc.step.name
        if loc.step.compensate and name in ctx.index and ctx.in_compensations(name):
            yield (
                (*loc.path, "compensate"),
                f"step {name!r} is itself a compensation; compensations are not "
                "compensated — remove `compensate`",
            )
