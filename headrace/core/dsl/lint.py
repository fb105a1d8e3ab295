"""The linter: every check on a definition, in one pipeline.

``lint_text`` reads a document (loader rules ``HR0xx``: syntax, duplicate keys,
model shape), then runs the validation rules (``HR1xx``, errors that block a
deploy) and the advice rules (``HR2xx``) on the model, and returns every
finding with ``file:line:col``. ``headrace lint`` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path as FsPath

from headrace.core.dsl.context import LintContext
from headrace.core.dsl.findings import Finding, SourceMap, has_errors, placed
from headrace.core.dsl.load import parse_definition, read_document
from headrace.core.dsl.model import Definition
from headrace.core.dsl.registry import Phase, Rule, all_rules
from headrace.errors import ErrorCode, HeadraceError

__all__ = [
    "Finding",
    "Rule",
    "all_rules",
    "lint",
    "lint_file",
    "lint_text",
    "rules_markdown",
    "select_rules",
]


def select_rules(select: Iterable[str] = (), ignore: Iterable[str] = ()) -> list[Rule]:
    """Rules chosen by id or name: all of them, or only ``select``, minus ``ignore``.

    Raises ``HeadraceError(CONFIG_INVALID)`` naming any id or name that is no rule.
    """
    rules = all_rules()
    known = {r.id for r in rules} | {r.name for r in rules}
    wanted, dropped = set(select), set(ignore)
    unknown = sorted((wanted | dropped) - known)
    if unknown:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"no such lint rule: {', '.join(unknown)} — `headrace lint --rules` lists them",
        )
    return [
        r for r in rules if (not wanted or {r.id, r.name} & wanted) and not {r.id, r.name} & dropped
    ]


def rules_markdown(rules: Iterable[Rule] | None = None) -> str:
    """The rules as a Markdown table (the one in ``docs/dsl.md``)."""
    lines = ["| id | name | severity | what it finds |", "| --- | --- | --- | --- |"]
    for r in all_rules() if rules is None else rules:
        doc = r.doc.replace("|", "\\|")
        lines.append(f"| {r.id} | `{r.name}` | {r.severity} | {doc} |")
    return "\n".join(lines) + "\n"


def lint(
    definition: Definition,
    *,
    rules: Iterable[Rule] | None = None,
    source: SourceMap | None = None,
    file: str | None = None,
) -> list[Finding]:
    """Run the validation and lint rules on a parsed definition."""
    ctx = LintContext(definition)
    chosen = all_rules() if rules is None else list(rules)
    out: list[Finding] = []
    for r in chosen:
        if r.phase is not Phase.LOAD:
            out.extend(r.run(ctx))
    return placed(out, source, file)


def lint_text(
    text: str, file: str | None = None, *, rules: Iterable[Rule] | None = None
) -> list[Finding]:
    """Every finding about the definition in ``text`` (JSON or YAML), sorted by position."""
    chosen = all_rules() if rules is None else list(rules)
    ids = {r.id for r in chosen}
    doc = read_document(text, file)
    findings = [f for f in doc.findings if f.rule in ids]
    if has_errors(doc.findings) or doc.data is None:
        return placed(findings, doc.source, file)
    definition, errors = parse_definition(doc)
    findings += [f for f in errors if f.rule in ids]
    if definition is not None:
        findings += lint(definition, rules=chosen)
    return placed(findings, doc.source, file)


def lint_file(path: str | FsPath, *, rules: Iterable[Rule] | None = None) -> list[Finding]:
    p = FsPath(path)
    return lint_text(p.read_text(encoding="utf-8"), str(p), rules=rules)
