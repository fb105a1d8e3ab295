"""The ``headrace`` command: one Typer app, one sub-module per verb group."""

from __future__ import annotations

import importlib

import typer
from rich.console import Console

from headrace.errors import HeadraceError

app = typer.Typer(
    name="headrace",
    help=(
        "Durable workflows on Apache Kafka.\n\n"
        "Start here: `headrace dev up` brings up a local Kafka and the platform; "
        "`headrace deploy FILE` publishes a workflow; `headrace start TYPE --input JSON` runs it."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Each entry is (module under headrace.cli, how it attaches). A module exposes
# either `app` (a Typer group, added under its name) or `register(app)`.
COMMAND_MODULES: list[str] = [
    "dev",
    "topics",
    "lint",
    "simulate",
    "serve",
    "deploy",
    "runs",
    "schedule",
    "calendar",
    "worker",
    "dlq",
    "signal",
    "listing",
    "control",
    "drain",
    "approvals",
    "sla",
]


def _attach() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"headrace.cli.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
        else:
            app.add_typer(module.app, name=name.replace("_", "-"))


_attach()


def main() -> None:
    """Entry point: a HeadraceError anywhere ends in one red line and exit status 1."""
    try:
        app(standalone_mode=True)
    except HeadraceError as exc:
        Console(stderr=True).print(
            f"[red]error[/] [bold]{exc.code.code}[/] {exc.message}", highlight=False
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
