"""Lint rules about tasks: retries, timeouts, idempotency, connector settings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Path, Severity
from headrace.core.dsl.model import Step, TaskStep
from headrace.core.dsl.registry import Issue, rule
from headrace.core.durations import format_duration, parse_duration

ERROR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


@rule("HR220", "unbounded-retries", WARN, "a task retries forever (`retry.max_attempts: null`)")
def _unbounded(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        if step.retry.max_attempts is None:
            yield (
                (*path, "retry", "max_attempts"),
                f"task {step.name!r} retries forever (max_attempts is null): a permanent failure "
                "keeps the run busy for good — set retry.max_attempts",
            )


@rule("HR221", "task-without-timeout", WARN, "a task has no `timeouts.start_to_close`")
def _no_timeout(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        if step.timeouts.start_to_close is None:
            yield (
                (*path, "timeouts"),
                f"task {step.name!r} has no timeouts.start_to_close: if its worker dies mid-task "
                "the run waits forever — set it to the longest an attempt may take",
            )


def _tasks_in(step: Step) -> Iterator[TaskStep]:
    """The step itself if a task, else the tasks in its branches/body."""
    if isinstance(step, TaskStep):
        yield step
    for branch in getattr(step, "branches", []):
        for inner in branch.steps:
            yield from _tasks_in(inner)
    for inner in getattr(step, "steps", []):
        yield from _tasks_in(inner)


@rule(
    "HR222",
    "compensation-not-idempotent",
    WARN,
    "a compensated step or its compensation is a task not marked idempotent",
)
def _compensation_idempotency(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        step = loc.step
        if step.compensate is None or step.compensate not in ctx.index:
            continue
        if isinstance(step, TaskStep) and not step.idempotent:
            yield (
                (*loc.path, "idempotent"),
                f"task {step.name!r} is compensated but not idempotent: after a timed-out "
                f"attempt nobody knows how often it applied, so {step.compensate!r} may undo "
                "the wrong amount — make the service honour the idempotency key",
            )
        handler = ctx.index.step(step.compensate)
        for task in _tasks_in(handler):
            if not task.idempotent:
                yield (
                    ctx.path(task.name, "idempotent"),
                    f"compensation task {task.name!r} (undoing {step.name!r}) is not idempotent; "
                    "unwinding retries it and may run it again after a crash — make it "
                    "idempotent (and mark it so)",
                )


@rule("HR223", "retry-not-idempotent", WARN, "a task not marked idempotent is retried")
def _retry_non_idempotent(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        attempts = step.retry.max_attempts
        if not step.idempotent and (attempts is None or attempts > 1):
            yield (
                (*path, "retry", "max_attempts"),
                f"task {step.name!r} is not idempotent but may run {attempts or 'unbounded'} "
                "times: a retry after a lost reply applies it twice — set retry.max_attempts: 1 "
                "or make it idempotent",
            )


def _ms(value: str | None) -> int | None:
    return parse_duration(value) if value is not None else None


@rule("HR224", "heartbeat-too-long", WARN, "a heartbeat timeout is not shorter than start_to_close")
def _heartbeat(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        hb, stc = _ms(step.timeouts.heartbeat), _ms(step.timeouts.start_to_close)
        if hb is not None and stc is not None and hb >= stc:
            yield (
                (*path, "timeouts", "heartbeat"),
                f"task {step.name!r}: heartbeat timeout {format_duration(hb)} is not shorter "
                f"than start_to_close {format_duration(stc)}, so it never fires first — "
                "make it a fraction of start_to_close",
            )


@rule("HR225", "backoff-inverted", WARN, "`retry.max_backoff` is below `retry.initial_backoff`")
def _backoff(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        first, most = (
            parse_duration(step.retry.initial_backoff),
            parse_duration(step.retry.max_backoff),
        )
        if most < first:
            yield (
                (*path, "retry", "max_backoff"),
                f"task {step.name!r}: max_backoff {format_duration(most)} is below "
                f"initial_backoff {format_duration(first)}, so every retry waits "
                f"{format_duration(most)} — swap or fix them",
            )


@rule("HR226", "useless-non-retryable", INFO, "`non_retryable` on a task that never retries")
def _non_retryable(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        if step.retry.non_retryable and step.retry.max_attempts == 1:
            yield (
                (*path, "retry", "non_retryable"),
                f"task {step.name!r} makes one attempt only, so `non_retryable` changes nothing",
            )


@rule("HR227", "http-task-without-url", ERROR, "a task on the `http` queue has no `config.url`")
def _http(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        if step.queue == "http" and not isinstance(step.config.get("url"), str):
            yield (
                (*path, "config"),
                f"task {step.name!r} runs on the built-in `http` connector but has no "
                "config.url — add config: {method: POST, url: https://...}",
            )


_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[-_]?key|authorization|bearer)")
_REFERENCE = re.compile(r"^\$\{[^}]+\}$|^env:|^secret:")


def _secrets(value: Any, path: Path) -> Iterator[Path]:
    if isinstance(value, dict):
        for k, v in value.items():
            if _SECRET_KEY.search(str(k)) and isinstance(v, str) and v and not _REFERENCE.match(v):
                yield (*path, k)
            else:
                yield from _secrets(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _secrets(v, (*path, i))


@rule("HR228", "secret-in-config", WARN, "a task's `config` holds what looks like a literal secret")
def _secret_config(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(TaskStep):
        for where in _secrets(step.config, (*path, "config")):
            yield (
                where,
                f"task {step.name!r}: {where[-1]!r} holds a literal secret, but definitions "
                "are published on the `definitions` topic for anyone with read access — keep "
                "the secret in the connector's or worker's own environment",
            )
