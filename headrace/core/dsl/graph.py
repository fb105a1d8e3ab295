"""The flow index: a definition's steps as a graph, built once per definition.

The decider, the linter and ``headrace simulate`` all ask the same questions
of a definition — where does step ``x`` live, what runs after it, where can it
jump, which expressions does it hold and with which variables — so the answers
are computed once here (:func:`flow_index`) instead of by walking the pydantic
tree on every decision.

Scopes. Every step lives in exactly one *scope*, a step list:

* ``main`` — ``Definition.steps``;
* ``<parallel>.<branch>`` — the steps of one branch of a ``parallel`` step;
* ``<foreach>`` — the body of a ``foreach`` step;
* ``compensations`` — ``Definition.compensations``.

Step names are unique across the whole definition, so a name alone finds a
step, its scope and its parent (the ``parallel``/``foreach`` step owning the
scope). Transfers (``next``, choice targets, ``catch``, ``on_timeout``,
``on_reject``, ``escalation``) stay inside the step's own scope.

Successor (where a flow goes when a step completes normally): the step's
``next``; else nothing if it has ``end: true``, is a ``succeed``/``fail``/
``choice``, or lives in ``compensations`` (each compensation is an entry point
of its own and does not fall through to the next one listed); else the
following step of its list; else nothing (the flow ends). A ``choice`` goes
only where its rules or ``default`` say; with no match and no default it fails
with ``choice.unmatched``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from headrace.core.dsl.model import (
    ApprovalStep,
    CallStep,
    ChoiceStep,
    Definition,
    FailStep,
    ForeachStep,
    ParallelStep,
    SetStep,
    SpawnStep,
    Step,
    SucceedStep,
    TaskStep,
    WaitSignalStep,
    WaitStep,
)
from headrace.core.expr import Expression, compile_expr

MAIN = "main"
COMPENSATIONS = "compensations"
TERMINAL_KINDS = frozenset({"succeed", "fail"})
_NO_SUCCESSOR = frozenset({"succeed", "fail", "choice"})


class ScopeKind(StrEnum):
    MAIN = "main"
    BRANCH = "branch"
    BODY = "body"  # a foreach body
    COMPENSATIONS = "compensations"


@dataclass(frozen=True, slots=True)
class Scope:
    """One step list of the definition."""

    id: str
    kind: ScopeKind
    steps: tuple[str, ...]
    owner: str | None = None  # the parallel / foreach step that owns this scope
    branch: str | None = None  # branch name, for BRANCH scopes

    @property
    def first(self) -> str | None:
        return self.steps[0] if self.steps else None


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Where a step sits and where it leads."""

    step: Step
    scope: Scope
    position: int
    successor: str | None
    in_foreach: bool  # some enclosing scope is a foreach body ($index, $item exist)


class Transfer(NamedTuple):
    """A possible jump from a step: ``label`` names the field (``next``,
    ``choices[0]``, ``default``, ``catch[1]``, ``on_timeout``, ...)."""

    label: str
    target: str
    implicit: bool = False  # the list-order successor, not written by the author


class ExprSite(NamedTuple):
    """An expression of a step: field path, source, and the ``$variables`` it may use."""

    field: str
    source: str
    variables: tuple[str, ...]


_TEMPLATE = re.compile(r"\$\{(.*?)\}", re.S)


def split_template(text: str) -> list[tuple[bool, str]]:
    """Split ``'order ${ .id } failed'`` into ``[(False, 'order '), (True, ' .id '), ...]``."""
    out: list[tuple[bool, str]] = []
    pos = 0
    for m in _TEMPLATE.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos : m.start()]))
        out.append((True, m.group(1)))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


@dataclass(slots=True)
class FlowIndex:
    """The graph of one definition. Build it with :func:`flow_index` (cached)."""

    definition: Definition
    steps: dict[str, StepInfo] = field(default_factory=dict)
    scopes: dict[str, Scope] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # names defined more than once
    memo: dict[Any, Any] = field(default_factory=dict)  # per-definition caches of index users
    _compiled: dict[tuple[str, str], Expression] = field(default_factory=dict)
    _sites: dict[str, tuple[ExprSite, ...]] = field(default_factory=dict)

    # -- lookups -------------------------------------------------------------

    @property
    def start(self) -> str:
        """The run's first step."""
        return self.definition.start or self.scopes[MAIN].steps[0]

    def step(self, name: str) -> Step:
        return self.steps[name].step

    def info(self, name: str) -> StepInfo:
        return self.steps[name]

    def __contains__(self, name: object) -> bool:
        return name in self.steps

    def scope_of(self, name: str) -> Scope:
        return self.steps[name].scope

    def parent_of(self, name: str) -> Step | None:
        """The parallel/foreach step whose branch or body holds ``name``, if any."""
        owner = self.steps[name].scope.owner
        return self.steps[owner].step if owner else None

    def ancestors(self, name: str) -> list[Step]:
        """Enclosing parallel/foreach steps, innermost first."""
        out: list[Step] = []
        parent = self.parent_of(name)
        while parent is not None:
            out.append(parent)
            parent = self.parent_of(parent.name)
        return out

    def successor(self, name: str) -> str | None:
        return self.steps[name].successor

    def first_step(self, scope_id: str) -> str | None:
        return self.scopes[scope_id].first

    def branch_scope(self, parallel: str, branch: str) -> Scope:
        return self.scopes[f"{parallel}.{branch}"]

    def body_scope(self, foreach: str) -> Scope:
        return self.scopes[foreach]

    def targets(self, name: str) -> list[Transfer]:
        """Every step ``name`` can hand its flow to."""
        info = self.steps[name]
        step = info.step
        out: list[Transfer] = []
        if isinstance(step, ChoiceStep):
            out.extend(Transfer(f"choices[{i}]", r.next) for i, r in enumerate(step.choices))
            if step.default is not None:
                out.append(Transfer("default", step.default))
        elif info.successor is not None:
            out.append(Transfer("next", info.successor, step.next is None))
        out.extend(Transfer(f"catch[{i}]", c.next) for i, c in enumerate(step.catch))
        if isinstance(step, WaitSignalStep) and step.on_timeout:
            out.append(Transfer("on_timeout", step.on_timeout))
        if isinstance(step, ApprovalStep):
            if step.on_reject:
                out.append(Transfer("on_reject", step.on_reject))
            if step.escalation:
                out.append(Transfer("escalation", step.escalation))
        return out

    def iter_steps(self) -> Iterator[StepInfo]:
        return iter(self.steps.values())

    # -- expressions ---------------------------------------------------------

    def expressions(self, name: str) -> tuple[ExprSite, ...]:
        """The jq expressions written on step ``name``, with their variables."""
        sites = self._sites.get(name)
        if sites is None:
            sites = self._sites[name] = tuple(_sites_of(self.steps[name]))
        return sites

    def compiled(self, name: str, field_: str) -> Expression:
        """The compiled expression at ``field_`` of step ``name`` (compiled once).

        Raises ``HeadraceError(EXPRESSION_INVALID)`` if it does not compile and
        ``KeyError`` if the step has no such expression.
        """
        key = (name, field_)
        expr = self._compiled.get(key)
        if expr is None:
            for site in self.expressions(name):
                if site.field == field_:
                    expr = compile_expr(site.source, site.variables)
                    break
            else:
                raise KeyError(f"step {name!r} has no expression at {field_!r}")
            self._compiled[key] = expr
        return expr


def _loop_vars(info: StepInfo) -> tuple[str, ...]:
    return ("index", "item") if info.in_foreach else ()


def _sites_of(info: StepInfo) -> Iterator[ExprSite]:
    step = info.step
    loop = _loop_vars(info)
    mapped = (*loop, "data")

    def site(field_: str, source: str | None, variables: tuple[str, ...] = loop) -> None:
        if source is not None:
            found.append(ExprSite(field_, source, tuple(sorted(set(variables)))))

    found: list[ExprSite] = []
    if isinstance(step, TaskStep):
        site("input", step.input)
        site("output", step.output, mapped)
        site("idempotency_key", step.idempotency_key)
    elif isinstance(step, ChoiceStep):
        for i, rule in enumerate(step.choices):
            site(f"choices[{i}].when", rule.when)
    elif isinstance(step, ParallelStep):
        site("output", step.output, mapped)
    elif isinstance(step, ForeachStep):
        site("items", step.items)
        site("collect", step.collect, ("index", "item"))
    elif isinstance(step, WaitStep):
        site("until", step.until)
    elif isinstance(step, WaitSignalStep):
        site("correlation", step.correlation)
        site("output", step.output, mapped)
    elif isinstance(step, ApprovalStep):
        site("assignees_from", step.assignees_from)
    elif isinstance(step, CallStep):
        site("input", step.input)
        site("output", step.output, mapped)
    elif isinstance(step, SpawnStep):
        site("input", step.input)
    elif isinstance(step, SetStep):
        site("value", step.value)
    elif isinstance(step, SucceedStep):
        site("output", step.output)
    elif isinstance(step, FailStep) and step.message:
        for i, (is_expr, part) in enumerate(split_template(step.message)):
            if is_expr:
                site(f"message[{i}]", part)
    return iter(found)


def _children(step: Step) -> list[tuple[str, ScopeKind, list[Any], str | None]]:
    if isinstance(step, ParallelStep):
        return [(f"{step.name}.{b.name}", ScopeKind.BRANCH, b.steps, b.name) for b in step.branches]
    if isinstance(step, ForeachStep):
        return [(step.name, ScopeKind.BODY, step.steps, None)]
    return []


def build_index(definition: Definition) -> FlowIndex:
    """Index ``definition`` (no caching; prefer :func:`flow_index`)."""
    index = FlowIndex(definition)

    def add(
        scope_id: str,
        kind: ScopeKind,
        steps: list[Any],
        owner: str | None,
        branch: str | None,
        in_foreach: bool,
    ) -> None:
        scope = Scope(scope_id, kind, tuple(s.name for s in steps), owner, branch)
        index.scopes.setdefault(scope_id, scope)
        for pos, step in enumerate(steps):
            if step.name in index.steps:
                index.duplicates.append(step.name)
            else:
                index.steps[step.name] = StepInfo(
                    step, scope, pos, _successor(step, kind, steps, pos), in_foreach
                )
            for child_id, child_kind, child_steps, child_branch in _children(step):
                add(
                    child_id,
                    child_kind,
                    child_steps,
                    step.name,
                    child_branch,
                    in_foreach or child_kind is ScopeKind.BODY,
                )

    add(MAIN, ScopeKind.MAIN, list(definition.steps), None, None, False)
    add(COMPENSATIONS, ScopeKind.COMPENSATIONS, list(definition.compensations), None, None, False)
    return index


def _successor(step: Any, kind: ScopeKind, steps: list[Any], pos: int) -> str | None:
    if step.kind in _NO_SUCCESSOR:
        return None
    if step.next is not None:
        return str(step.next)
    if step.end or kind is ScopeKind.COMPENSATIONS:
        return None
    return steps[pos + 1].name if pos + 1 < len(steps) else None


_CACHE: dict[int, FlowIndex] = {}
_CACHE_SIZE = 512


def flow_index(definition: Definition) -> FlowIndex:
    """The (cached) index of ``definition``; definitions are immutable, so one build each."""
    index = _CACHE.get(id(definition))
    if index is not None and index.definition is definition:
        return index
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    # the cache holds the definition itself, so its id cannot be reused while cached
    index = _CACHE[id(definition)] = build_index(definition)
    return index
