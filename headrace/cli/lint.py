"""``headrace lint`` and ``headrace schema``: check definitions before they are deployed.

``lint`` prints findings the way compilers do, one per line
(``file:line:col: error HR104: message (at path) [rule-name]``) so editors and
CI annotate them, and exits 1 when any finding is an error.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from headrace.core.dsl import schema as dsl_schema
from headrace.core.dsl.findings import Finding, Severity
from headrace.core.dsl.lint import lint_file, rules_markdown, select_rules
from headrace.core.dsl.registry import Rule
from headrace.errors import HeadraceError


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"  # --rules only: the table in docs/dsl.md


def _print_rules(rules: list[Rule], fmt: Format) -> None:
    if fmt is Format.JSON:
        typer.echo(json.dumps([r.to_dict() for r in rules], indent=2))
        return
    if fmt is Format.MARKDOWN:
        typer.echo(rules_markdown(rules), nl=False)
        return
    width = max(len(r.name) for r in rules)
    for r in rules:
        typer.echo(f"{r.id}  {r.severity:<7}  {r.name:<{width}}  {r.doc}")


def _summary(findings: list[Finding], files: int) -> str:
    counts = Counter(f.severity for f in findings)
    parts = [
        f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}"
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    ]
    return f"{', '.join(parts)} in {files} file{'s' if files != 1 else ''}"


def lint_cmd(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="definition files (.yaml, .yml or .json)", show_default=False),
    ] = None,
    rules: Annotated[bool, typer.Option("--rules", help="list the rules and exit")] = False,
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", help="text (compiler style) or json; markdown for --rules"),
    ] = Format.TEXT,
    select: Annotated[
        list[str] | None,
        typer.Option("--select", help="only these rules (id or name; repeatable)"),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option("--ignore", help="skip these rules (id or name; repeatable)"),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="errors only, no summary line")
    ] = False,
) -> None:
    """Check workflow definitions: syntax, model, references, expressions and 40+ lint rules.

    Exits 1 if any error is found, 0 otherwise (warnings and infos do not fail).
    """
    try:
        chosen = select_rules(select or (), ignore or ())
    except HeadraceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if rules:
        _print_rules(chosen, fmt)
        return
    if not files:
        typer.echo("error: name at least one definition file (or use --rules)", err=True)
        raise typer.Exit(2)
    findings: list[Finding] = []
    for path in files:
        try:
            findings.extend(lint_file(path, rules=chosen))
        except OSError as exc:
            findings.append(
                Finding(
                    "HR001",
                    "parse-error",
                    Severity.ERROR,
                    f"cannot read the file: {exc.strerror or exc}",
                    file=str(path),
                )
            )
    shown = [f for f in findings if not quiet or f.severity is Severity.ERROR]
    if fmt is Format.JSON:
        counts = Counter(str(f.severity) for f in findings)
        typer.echo(
            json.dumps(
                {
                    "files": len(files),
                    "errors": counts["error"],
                    "warnings": counts["warning"],
                    "infos": counts["info"],
                    "findings": [f.to_dict() for f in shown],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for f in shown:
            typer.echo(f.format())
        if not quiet:
            typer.echo(_summary(findings, len(files)), err=True)
    if any(f.severity is Severity.ERROR for f in findings):
        raise typer.Exit(1)


def schema_cmd(
    write: Annotated[
        bool, typer.Option("--write", help="write schemas/workflow.schema.json in the repo")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 if the committed file is out of date")
    ] = False,
) -> None:
    """Print the JSON Schema of workflow definitions (generated from the models)."""
    if check:
        path = dsl_schema.SCHEMA_PATH
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != dsl_schema.render():
            typer.echo(f"{path} is out of date — run `{dsl_schema.REGENERATE}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path} is up to date")
        return
    if write:
        typer.echo(f"wrote {dsl_schema.write()}")
        return
    typer.echo(dsl_schema.render(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("lint")(lint_cmd)
    app.command("schema")(schema_cmd)
