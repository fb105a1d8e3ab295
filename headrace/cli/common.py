"""What the CLI's commands share: how they fail, how they read JSON arguments, output formats.

Every error ends as one red line on stderr — ``error HR-XXX-NNN message`` — and
an exit status: 1 when the operation failed, 2 for a usage error (as click's own).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from headrace.errors import ErrorCode, HeadraceError

err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_USAGE = 2


class Format(StrEnum):
    """``--format`` of the commands that print a table or JSON."""

    TABLE = "table"
    JSON = "json"


def fail(exc: HeadraceError, code: int = 1) -> typer.Exit:
    """Print ``exc`` as one red line; the ``typer.Exit`` to raise (``raise fail(exc)``)."""
    err.print(f"[red]error[/] [bold]{exc.code.code}[/] {exc.message}", markup=True)
    return typer.Exit(code)


def usage(message: str) -> typer.Exit:
    """A usage error (``HR-CFG-001``, exit status 2)."""
    return fail(HeadraceError(ErrorCode.CONFIG_INVALID, message), EXIT_USAGE)


def load_json(text: str, option: str) -> Any:
    """``text`` as JSON — or, written ``@path``, the JSON in that file — for ``option``.

    Raises ``HeadraceError``: ``CONFIG_INVALID`` when the file cannot be read,
    ``INPUT_INVALID`` when it is not JSON."""
    where = option
    if text.startswith("@"):
        path = Path(text[1:])
        where = f"{path} ({option})"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID, f"{option}: cannot read {path}: {exc.strerror}"
            ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise HeadraceError(ErrorCode.INPUT_INVALID, f"{where} is not JSON: {exc}") from None
