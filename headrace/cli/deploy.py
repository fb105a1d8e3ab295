"""``headrace deploy FILE...`` and ``headrace definitions list|show``.

``deploy`` checks every file first — the loader's and validator's errors and
the linter's, all at once, for all files — and publishes nothing if any file
has an error; warnings are printed and do not block. Then it publishes each
definition to the compacted ``definitions`` topic, where ``type@version`` is
immutable: the same body again is ``unchanged``, another body is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from headrace.cli.common import err, fail
from headrace.core.dsl.findings import Finding, Severity
from headrace.core.dsl.lint import lint_text
from headrace.core.dsl.load import load_definition
from headrace.core.dsl.model import Definition
from headrace.definitions import DefinitionCatalog, Deployed, as_jsonable, deploy
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings

app = typer.Typer(help="Inspect deployed workflow definitions.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


def _check(files: list[Path]) -> tuple[list[tuple[Definition, str]], list[Finding], list[str]]:
    """Every file's definition, its warnings, and every error of every file."""
    items: list[tuple[Definition, str]] = []
    warnings: list[Finding] = []
    errors: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            errors.append(f"{path}: cannot read the file: {exc.strerror or exc}")
            continue
        findings = lint_text(text, str(path))
        bad = [f for f in findings if f.severity is Severity.ERROR]
        if bad:
            errors.extend(f.format() for f in bad)
            continue
        warnings.extend(f for f in findings if f.severity is Severity.WARNING)
        try:
            items.append((load_definition(text, str(path)), text))
        except HeadraceError as exc:
            errors.append(exc.message)
    return items, warnings, errors


def deploy_cmd(
    files: Annotated[
        list[Path], typer.Argument(help="definition files (.yaml, .yml or .json)", exists=False)
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="who deploys (default: the OS user)")
    ] = None,
) -> None:
    """Validate, lint and publish workflow definitions (errors refuse the deploy)."""
    items, warnings, errors = _check(files)
    for w in warnings:
        err.print(f"[yellow]{w.format()}[/]", markup=True)
    if errors:
        for line in errors:
            err.print(line, markup=False)
        raise fail(
            HeadraceError(
                ErrorCode.DEFINITION_INVALID,
                f"{len(errors)} error(s) — nothing was deployed; fix them and deploy again "
                "(`headrace lint FILE` shows the same findings)",
            )
        )
    try:
        outcomes = deploy(Settings(), items, by=by)
    except HeadraceError as exc:
        raise fail(exc) from None
    for o in outcomes:
        colour = "green" if o.status == "deployed" else "dim"
        out.print(f"[{colour}]{o.status:<9}[/] {o.key}  sha256:{o.digest[:12]}", markup=True)


class ListFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class ShowFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


def _catalog() -> DefinitionCatalog:
    try:
        return DefinitionCatalog(Settings()).start(wait=30)
    except HeadraceError as exc:
        raise fail(exc) from None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else "-"


@app.command("list")
def list_cmd(
    fmt: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.TEXT,
) -> None:
    """Every deployed workflow type: its versions, the latest, when and by whom."""
    catalog = _catalog()
    try:
        deployed = catalog.all()
    finally:
        catalog.stop()
    by_type: dict[str, list[Deployed]] = {}
    for d in deployed:
        by_type.setdefault(d.definition.type, []).append(d)
    rows: list[dict[str, Any]] = []
    for name in sorted(by_type):
        versions = sorted(by_type[name], key=lambda d: d.definition.version)
        latest = versions[-1]
        rows.append(
            {
                "type": name,
                "versions": [d.definition.version for d in versions],
                "latest": latest.definition.version,
                "deployed_at": latest.deployed_at,
                "deployed_by": latest.deployed_by,
            }
        )
    if fmt is ListFormat.JSON:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print("no definitions deployed — `headrace deploy FILE` publishes one")
        return
    table = Table("type", "versions", "latest", "deployed at", "by", box=None, pad_edge=False)
    for r in rows:
        table.add_row(
            r["type"],
            ", ".join(str(v) for v in r["versions"]),
            str(r["latest"]),
            _when(r["deployed_at"]),
            r["deployed_by"] or "-",
        )
    out.print(table)


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(metavar="TYPE[@VERSION]", help="default: latest")],
    fmt: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.YAML,
    source: Annotated[
        bool, typer.Option("--source", help="print the file as it was deployed")
    ] = False,
) -> None:
    """One deployed definition: the normalized document (YAML) or the whole record (JSON)."""
    workflow, _, ver = name.partition("@")
    if ver and not ver.isdigit():
        raise fail(
            HeadraceError(ErrorCode.CONFIG_INVALID, f"{name!r}: the version after @ is a number")
        )
    catalog = _catalog()
    try:
        deployed = catalog.get(workflow, int(ver) if ver else None)
        known = sorted(
            {d.definition.version for d in catalog.all() if d.definition.type == workflow}
        )
    finally:
        catalog.stop()
    if deployed is None:
        hint = f"deployed versions: {', '.join(map(str, known))}" if known else "not deployed"
        raise fail(HeadraceError(ErrorCode.DEFINITION_NOT_FOUND, f"no {name}: {hint}"))
    if source:
        typer.echo(deployed.source, nl=not deployed.source.endswith("\n"))
        return
    if fmt is ShowFormat.JSON:
        typer.echo(json.dumps(as_jsonable(deployed), indent=2, ensure_ascii=False))
        return
    doc = deployed.definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    typer.echo(
        f"# {deployed.key} deployed {_when(deployed.deployed_at)} by "
        f"{deployed.deployed_by or '-'}, sha256:{deployed.digest}"
    )
    typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


def register(root: typer.Typer) -> None:
    root.command("deploy")(deploy_cmd)
    root.add_typer(app, name="definitions")
