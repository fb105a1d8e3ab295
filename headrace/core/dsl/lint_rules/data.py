"""Lint rules about the definition's data, triggers, people and children."""

from __future__ import annotations

import re
from collections.abc import Iterator

from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Path, Severity
from headrace.core.dsl.model import ApprovalStep, CallStep, ForeachStep, Quorum, SpawnStep
from headrace.core.dsl.registry import Issue, rule

WARN, INFO = Severity.WARNING, Severity.INFO


@rule("HR260", "input-schema-missing", WARN, "the definition has no `input_schema`")
def _input_schema(ctx: LintContext) -> Iterator[Issue]:
    if ctx.definition.input_schema is None:
        yield (
            (),
            f"{ctx.definition.key} has no input_schema, so any input starts a run and mistakes "
            "surface later as expression failures — describe the input with a JSON Schema",
        )


@rule("HR261", "trigger-without-filter", INFO, "a trigger starts a run for every event of its type")
def _trigger_filter(ctx: LintContext) -> Iterator[Issue]:
    for i, trigger in enumerate(ctx.definition.triggers):
        if trigger.filter is None and trigger.source is None:
            yield (
                ("triggers", i),
                f"trigger on {trigger.event_type!r} has neither `filter` nor `source`: every "
                "such event from anywhere starts a run — narrow it if that is not intended",
            )


@rule("HR262", "duplicate-trigger", WARN, "two triggers match the same events")
def _duplicate_trigger(ctx: LintContext) -> Iterator[Issue]:
    seen: dict[tuple[str, str | None, str | None], int] = {}
    for i, t in enumerate(ctx.definition.triggers):
        key = (t.event_type, t.source, t.filter)
        if key in seen:
            yield (
                ("triggers", i),
                f"trigger {i} matches the same events as trigger {seen[key]} "
                f"({t.event_type!r}), so each event would start two runs — remove one",
            )
        else:
            seen[key] = i


@rule(
    "HR263", "serial-approval-with-roles", WARN, "a serial approval lists roles, which it ignores"
)
def _serial(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if step.quorum is Quorum.SERIAL and step.roles:
            yield (
                (*path, "roles"),
                f"approval {step.name!r} is serial: only `assignees` decide, one after another "
                "in the listed order, so `roles` is ignored — name the approvers in `assignees` "
                "or use quorum 'threshold'",
            )


@rule("HR264", "redundant-veto", INFO, "`veto` on a quorum where one rejection already decides")
def _veto(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if step.veto and step.quorum in (Quorum.SERIAL, Quorum.PARALLEL):
            yield (
                (*path, "veto"),
                f"approval {step.name!r}: with quorum {step.quorum.value!r} every approver must "
                "approve, so one rejection rejects anyway — `veto` changes nothing",
            )


@rule("HR265", "threshold-is-everyone", INFO, "a threshold approval needs every named approver")
def _threshold_all(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ApprovalStep):
        if (
            step.quorum is Quorum.THRESHOLD
            and not (step.roles or step.assignees_from)
            and step.threshold == len(step.assignees)
            and len(step.assignees) > 1
        ):
            yield (
                (*path, "threshold"),
                f"approval {step.name!r} needs {step.threshold} of {len(step.assignees)} — that "
                "is everyone; say `quorum: parallel`, or lower the threshold",
            )


@rule("HR266", "recursive-child", WARN, "a call/spawn starts a run of this same workflow type")
def _recursive_child(ctx: LintContext) -> Iterator[Issue]:
    for cls in (CallStep, SpawnStep):
        for path, step in ctx.of_kind(cls):
            if step.workflow == ctx.definition.type:
                yield (
                    (*path, "workflow"),
                    f"step {step.name!r} starts another {step.workflow!r} run from inside one: "
                    "unless a choice stops it, every run starts another without end",
                )


_INTO_KEY = re.compile(r"^[A-Za-z0-9_$@-]+$")


@rule("HR267", "odd-into-path", WARN, "an `into` path has keys that look like jq, not plain names")
def _into(ctx: LintContext) -> Iterator[Issue]:
    for loc in ctx.steps():
        places: list[tuple[Path, str | None]] = [
            ((*loc.path, "into"), getattr(loc.step, "into", None))
        ]
        places += [((*loc.path, "catch", i, "into"), c.into) for i, c in enumerate(loc.step.catch)]
        for path, value in places:
            odd = [k for k in (value or "").split(".") if k and not _INTO_KEY.match(k)]
            if odd:
                yield (
                    path,
                    f"step {loc.step.name!r}: `into` is a dotted path of object keys "
                    f"(e.g. 'order.payment'); {value!r} makes a key named {odd[0]!r} — "
                    "use plain names (list indexes are not supported)",
                )


@rule("HR268", "foreach-results-dropped", INFO, "a foreach has no `into`, so its results are lost")
def _foreach_into(ctx: LintContext) -> Iterator[Issue]:
    for path, step in ctx.of_kind(ForeachStep):
        if step.into is None:
            yield (
                path,
                f"foreach {step.name!r} has no `into`: its list of results is not an object, so "
                "nothing is merged into the data — add `into:` unless only side effects matter",
            )
