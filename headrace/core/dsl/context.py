"""What every validation and lint rule reads: one :class:`LintContext` per definition.

The flow questions (scopes, successors, transfers, expression sites) are
answered by :mod:`headrace.core.dsl.graph`; this module adds what only
reporting needs — the document path of every step, so a finding can point at
``steps[2].branches[0].steps[1].next`` — and a few derived facts computed once
(reachability, compiled expressions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from headrace.core.dsl.findings import Path
from headrace.core.dsl.graph import COMPENSATIONS, MAIN, FlowIndex, ScopeKind, flow_index
from headrace.core.dsl.model import Definition, ForeachStep, ParallelStep, Step
from headrace.core.expr import BASE_VARIABLES

_FIELD_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class Located(NamedTuple):
    """A step and its path in the document (every occurrence, duplicates included)."""

    path: Path
    step: Step


class Site(NamedTuple):
    """An expression somewhere in the definition, with the ``$variables`` it may use."""

    path: Path
    source: str
    variables: tuple[str, ...]
    dot: str  # what `.` is there, for messages
    step: str | None


def field_path(field_: str) -> Path:
    """``'choices[0].when'`` → ``('choices', 0, 'when')``; template parts map to their field."""
    if field_.startswith("message["):
        return ("message",)
    out: list[str | int] = []
    for name, index in _FIELD_PART.findall(field_):
        out.append(name if name else int(index))
    return tuple(out)


def _walk(steps: list[Step], base: Path) -> Iterator[Located]:
    for i, step in enumerate(steps):
        path = (*base, i)
        yield Located(path, step)
        if isinstance(step, ParallelStep):
            for j, branch in enumerate(step.branches):
                yield from _walk(branch.steps, (*path, "branches", j, "steps"))
        elif isinstance(step, ForeachStep):
            yield from _walk(step.steps, (*path, "steps"))


def _dot(field_: str) -> str:
    if field_ == "output":
        return "the step's result"
    if field_ == "collect":
        return "an iteration's final data"
    return "the run data"


@dataclass
class LintContext:
    """A definition under inspection, with its flow index and document paths."""

    definition: Definition
    index: FlowIndex = field(init=False)

    def __post_init__(self) -> None:
        self.index = flow_index(self.definition)

    # -- steps and paths -----------------------------------------------------

    @cached_property
    def located(self) -> list[Located]:
        """Every step with its document path, in document order."""
        return [
            *_walk(list(self.definition.steps), ("steps",)),
            *_walk(list(self.definition.compensations), ("compensations",)),
        ]

    @cached_property
    def paths(self) -> dict[str, Path]:
        """Document path of each step name (its first definition)."""
        out: dict[str, Path] = {}
        for loc in self.located:
            out.setdefault(loc.step.name, loc.path)
        return out

    def path(self, name: str, *rest: str | int) -> Path:
        return (*self.paths.get(name, ()), *rest)

    def steps(self) -> Iterator[Located]:
        """Each uniquely named step once (the first of duplicates)."""
        seen: set[str] = set()
        for loc in self.located:
            if loc.step.name not in seen:
                seen.add(loc.step.name)
                yield loc

    def of_kind(self, cls: type[Any]) -> Iterator[tuple[Path, Any]]:
        for loc in self.steps():
            if isinstance(loc.step, cls):
                yield loc.path, loc.step

    # -- reachability --------------------------------------------------------

    @cached_property
    def reachable(self) -> set[str]:
        """Steps some run can get to: from the start, through every transfer, into
        branches and bodies of reachable steps, and into compensations named by
        ``compensate`` on reachable steps."""
        idx = self.index
        seen: set[str] = set()
        todo: list[str] = []

        def visit(name: str | None) -> None:
            if name is not None and name in idx and name not in seen:
                seen.add(name)
                todo.append(name)

        visit(idx.start if idx.scopes[MAIN].steps else None)
        while todo:
            name = todo.pop()
            step = idx.step(name)
            for transfer in idx.targets(name):
                target = transfer.target
                if target in idx and idx.scope_of(target).id == idx.scope_of(name).id:
                    visit(target)
            comp = step.compensate
            if comp and comp in idx and idx.scope_of(comp).kind is ScopeKind.COMPENSATIONS:
                visit(comp)
            if isinstance(step, ParallelStep):
                for branch in step.branches:
                    visit(idx.branch_scope(step.name, branch.name).first)
            elif isinstance(step, ForeachStep):
                visit(idx.body_scope(step.name).first)
        return seen

    @cached_property
    def compensation_entries(self) -> set[str]:
        return {
            loc.step.compensate
            for loc in self.located
            if loc.step.compensate and loc.step.compensate in self.index
        }

    def in_compensations(self, name: str) -> bool:
        """Whether ``name`` lives in ``compensations`` or in a branch/body nested there."""
        scope = self.index.scope_of(name)
        while scope.owner is not None:
            scope = self.index.scope_of(scope.owner)
        return scope.id == COMPENSATIONS

    # -- expressions ---------------------------------------------------------

    def sites(self) -> Iterator[Site]:
        """Every expression of the definition: step fields, then trigger fields."""
        for loc in self.steps():
            if loc.step.name not in self.index:
                continue
            for s in self.index.expressions(loc.step.name):
                yield Site(
                    (*loc.path, *field_path(s.field)),
                    s.source,
                    s.variables,
                    _dot(s.field),
                    loc.step.name,
                )
        for i, trigger in enumerate(self.definition.triggers):
            for name in ("filter", "input", "run_id"):
                src = getattr(trigger, name)
                if src is not None:
                    yield Site(("triggers", i, name), src, (), "the CloudEvent", None)


def available(variables: tuple[str, ...]) -> list[str]:
    """The ``$names`` an expression with step variables ``variables`` may use."""
    return [f"${v}" for v in (*BASE_VARIABLES, *variables)]
