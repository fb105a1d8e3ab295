"""The registry of every check that can report on a definition.

Loader checks (``HR0xx``) are *declared* (the loader produces their findings
itself); validation checks (``HR1xx``, errors that make a definition
undeployable) and lint checks (``HR2xx``) are registered with :func:`rule`
together with the function that runs them. ``headrace lint --rules`` and the
rules table in ``docs/dsl.md`` are both read from :data:`RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from headrace.core.dsl.findings import Finding, Path, Severity

if TYPE_CHECKING:
    from headrace.core.dsl.context import LintContext

Issue = tuple[Path, str]
Check = Callable[["LintContext"], Iterable[Issue]]


class Phase(StrEnum):
    LOAD = "load"  # syntax and model shape; produced by the loader
    VALIDATE = "validate"  # semantic errors: the definition cannot be deployed
    LINT = "lint"  # advice: likely bugs and risky choices


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: a stable id, a kebab-case name, a severity and a one-line doc."""

    id: str
    name: str
    severity: Severity
    doc: str
    phase: Phase
    check: Check | None = None

    def finding(self, message: str, path: Path = ()) -> Finding:
        return Finding(self.id, self.name, self.severity, message, path)

    def run(self, ctx: LintContext) -> list[Finding]:
        if self.check is None:
            return []
        return [self.finding(message, path) for path, message in self.check(ctx)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "severity": str(self.severity),
            "phase": str(self.phase),
            "doc": self.doc,
        }


RULES: dict[str, Rule] = {}


def _add(r: Rule) -> Rule:
    clash = RULES.get(r.id)
    if clash is not None and clash.name != r.name:
        raise RuntimeError(f"rule id {r.id} is used by both {clash.name!r} and {r.name!r}")
    if any(o.name == r.name and o.id != r.id for o in RULES.values()):
        raise RuntimeError(f"rule name {r.name!r} is registered twice")
    RULES[r.id] = r
    return r


def declare(rule_id: str, name: str, severity: Severity, doc: str) -> Rule:
    """Register a loader rule whose findings are produced outside the rule runner."""
    return _add(Rule(rule_id, name, severity, doc, Phase.LOAD))


def rule(
    rule_id: str, name: str, severity: Severity, doc: str, phase: Phase = Phase.LINT
) -> Callable[[Check], Check]:
    """Register ``check`` as a rule; it yields ``(path, message)`` for every problem found."""

    def register(check: Check) -> Check:
        _add(Rule(rule_id, name, severity, doc, phase, check))
        return check

    return register


def all_rules() -> list[Rule]:
    """Every rule, loader, validation and lint ones alike, sorted by id."""
    # importing these modules registers their rules
    import headrace.core.dsl.lint_rules
    import headrace.core.dsl.load
    import headrace.core.dsl.pydantic_errors
    import headrace.core.dsl.validate  # noqa: F401

    return sorted(RULES.values(), key=lambda r: r.id)
