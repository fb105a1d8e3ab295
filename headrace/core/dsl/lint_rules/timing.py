"""Lint rules about time: waits, timeouts, expiries, SLAs."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Path, Severity
from headrace.core.dsl.graph import MAIN
from headrace.core.dsl.model import (
    ApprovalStep,
    FailStep,
    ParallelStep,
    Step,
    TaskStep,
    WaitSignalStep,
    WaitStep,
)
from headrace.core.dsl.registry import Issue, rule
from headrace.core.durations import format_duration, parse_duration

WARN, INFO = Severity.WARNING, Severity.INFO


@rule("HR240", "zero-wait", WARN, "a wait step waits for no time at all")
def _zero_wait(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(WaitStep):
        zero = step.duration is not None and parse_duration(step.duration) == 0
        if step.business is not None:
            b = step.business
            zero = (b.duration is not None and parse_duration(b.duration) == 0) or b.days == 0
        if zero:
            yield (
                path,
                f"wait {step.name!r} waits zero time — remove it or give it a duration",
            )


@rule("HR241", "on-timeout-without-timeout", WARN, "`on_timeout` is set but `timeout` is not")
def _on_timeout(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(WaitSignalStep):
        if step.on_timeout is not None and step.timeout is None:
            yield (
                (*path, "on_timeout"),
                f"wait_signal {step.name!r} has on_timeout but no timeout, so it never times "
                "out — add `timeout:`",
            )


def _has_expiry(step: ApprovalStep) -> bool:
    return step.expiry is not None or step.expiry_business is not None


@rule("HR242", "escalation-without-expiry", WARN, "an approval escalates but never expires")
def _escalation(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if (step.escalation or step.escalate_to_role) and not _has_expiry(step):
            field_ = "escalation" if step.escalation else "escalate_to_role"
            yield (
                (*path, field_),
                f"approval {step.name!r} has {field_} but no expiry, so it never escalates — "
                "add `expiry:` (or `expiry_business:`)",
            )


@rule("HR243", "endless-reminders", WARN, "an approval reminds without end (no expiry, no max)")
def _reminders(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        r = step.reminders
        if r is not None and r.max is None and not _has_expiry(step):
            yield (
                (*path, "reminders"),
                f"approval {step.name!r} sends reminders every {r.every} for as long as nobody "
                "decides — add an expiry or reminders.max",
            )


def _durations(step: Step) -> Iterator[tuple[tuple[str, ...], str]]:
    """The fixed durations a step may spend, with their field paths."""
    if isinstance(step, TaskStep):
        for name in ("schedule_to_start", "start_to_close"):
            value = getattr(step.timeouts, name)
            if value is not None:
                yield ("timeouts", name), value
    elif isinstance(step, WaitStep) and step.duration is not None:
        yield ("duration",), step.duration
    elif isinstance(step, WaitSignalStep) and step.timeout is not None:
        yield ("timeout",), step.timeout
    elif isinstance(step, ApprovalStep) and step.expiry is not None:
        yield ("expiry",), step.expiry
    if step.sla is not None and step.sla.within is not None:
        yield ("sla", "within"), step.sla.within


@rule("HR244", "longer-than-run-timeout", WARN, "a step's duration exceeds the run's `timeout`")
def _beyond_run_timeout(ctx: LintContext) -> Iterator[Issue]:
    if ctx.definition.timeout is None:
        return
    limit = parse_duration(ctx.definition.timeout)
    for loc in ctx.steps():
        for field_, value in _durations(loc.step):
            if parse_duration(value) > limit:
                yield (
                    (*loc.path, *field_),
                    f"step {loc.step.name!r}: {'.'.join(field_)} {value} is longer than the "
                    f"run's timeout {ctx.definition.timeout}, which always fires first — "
                    "shorten it or raise `timeout`",
                )


def _weight(ctx: LintContext, step: Step, memo: dict[str, int]) -> int:
    """The least time a step takes to complete normally."""
    if isinstance(step, WaitStep) and step.duration is not None:
        return parse_duration(step.duration)
    if isinstance(step, ParallelStep):
        return max(
            (
                _shortest(ctx, ctx.index.branch_scope(step.name, b.name).id, memo)
                for b in step.branches
            ),
            default=0,
        )
    return 0  # tasks, signals, approvals and foreach (possibly empty) may be quick


def _shortest(ctx: LintContext, scope_id: str, memo: dict[str, int]) -> int:
    """Least time from a scope's entry to an end of it that is not a ``fail`` (Dijkstra)."""
    if scope_id in memo:
        return memo[scope_id]
    memo[scope_id] = 0  # a cycle through nested scopes cannot make it longer
    idx = ctx.index
    entry = idx.start if scope_id == MAIN else idx.first_step(scope_id)
    if entry is None or entry not in idx:
        return 0
    best: dict[str, int] = {}
    heap = [(_weight(ctx, idx.step(entry), memo), entry)]
    result: int | None = None
    while heap:
        t, name = heapq.heappop(heap)
        if name in best:
            continue
        best[name] = t
        step = idx.step(name)
        onward = [
            x.target
            for x in idx.targets(name)
            if x.target in idx and not x.label.startswith("catch")
            if idx.scope_of(x.target).id == scope_id
        ]
        if not onward and not isinstance(step, FailStep):
            result = t
            break
        for target in onward:
            if target not in best:
                heapq.heappush(heap, (t + _weight(ctx, idx.step(target), memo), target))
    memo[scope_id] = result or 0
    return memo[scope_id]


@rule(
    "HR245",
    "deadline-shorter-than-waits",
    WARN,
    "the run's SLA or timeout is shorter than its shortest successful path's waits",
)
def _deadline(ctx: LintContext) -> Iterator[Issue]:
    d = ctx.definition
    memo: dict[str, int] = {}
    least = _shortest(ctx, MAIN, memo)
    if least == 0:
        return
    checks: list[tuple[Path, str, str | None]] = [
        (("sla", "within"), "SLA", d.sla.within if d.sla else None),
        (("timeout",), "timeout", d.timeout),
    ]
    for path, what, value in checks:
        if value is not None and parse_duration(value) < least:
            yield (
                path,
                f"every successful run waits at least {format_duration(least)} in wait steps, "
                f"more than the run's {what} of {value} — every run "
                f"{'breaches it' if what == 'SLA' else 'times out'}; raise it or shorten the waits",
            )
    for path, step in ctx.of_kind(ParallelStep):
        if step.sla is not None and step.sla.within is not None:
            need = _weight(ctx, step, memo)
            if need > parse_duration(step.sla.within):
                yield (
                    (*path, "sla", "within"),
                    f"parallel {step.name!r} waits at least {format_duration(need)} in its "
                    f"branches, more than its SLA of {step.sla.within}",
                )
    for path, step in ctx.of_kind(WaitStep):
        within = step.sla.within if step.sla is not None else None
        if within and step.duration and parse_duration(step.duration) > parse_duration(within):
            yield (
                (*path, "sla", "within"),
                f"wait {step.name!r} lasts {step.duration}, more than its SLA of {within}",
            )


@rule("HR246", "signal-without-timeout", INFO, "a wait_signal may wait forever")
def _signal_timeout(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(WaitSignalStep):
        if step.timeout is None:
            yield (
                path,
                f"wait_signal {step.name!r} has no timeout: if {step.signal!r} never comes the "
                "run waits forever — add `timeout:` and `on_timeout:`",
            )


@rule("HR247", "approval-without-expiry", INFO, "an approval may wait forever")
def _approval_expiry(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if not _has_expiry(step):
            yield (
                path,
                f"approval {step.name!r} has no expiry: if nobody decides the run waits "
                "forever — add `expiry:` and `escalation:`",
            )
