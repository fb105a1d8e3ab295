"""``headrace simulate``: run a definition in-process against a script and
print its event history — a dry run that needs no Kafka."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from headrace.core.dsl.load import load_file
from headrace.core.simulate import Script, Simulation
from headrace.errors import ErrorCode, HeadraceError


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


def _read_value(text: str, what: str) -> Any:
    """A JSON/YAML value given inline or as ``@file``."""
    source = what
    if text.startswith("@"):
        path = Path(text[1:])
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HeadraceError(
                ErrorCode.INPUT_INVALID, f"cannot read {what} file {path}: {exc.strerror}"
            ) from None
    try:
        # YAML's safe loader without timestamps would be nicer; JSON first keeps "1" a string
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.load(text, Loader=_JsonishLoader)
    except yaml.YAMLError as exc:
        raise HeadraceError(
            ErrorCode.INPUT_INVALID, f"{source} is neither JSON nor YAML: {exc}"
        ) from None


class _JsonishLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates and times as strings (JSON has no dates)."""


_JsonishLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def simulate_cmd(
    file: Annotated[Path, typer.Argument(help="workflow definition (.yaml, .yml or .json)")],
    input_: Annotated[
        str, typer.Option("--input", "-i", help="run input: JSON/YAML, or @file")
    ] = "{}",
    script: Annotated[
        str | None,
        typer.Option("--script", "-s", help="scripted answers (YAML/JSON file, or @file)"),
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="text timeline or json")
    ] = Format.TEXT,
    run_id: Annotated[str, typer.Option("--run-id", help="run id to simulate with")] = "run-1",
) -> None:
    """Run FILE in-process with scripted task results, signals, approvals and time
    jumps; print the event history. Tasks the script does not answer complete with {}.

    The script format is described in docs/dsl.md (and headrace.core.simulate).
    Exit status: 0 when the run completes, is cancelled or still waits; 1 when it
    fails or is terminated; 2 when the definition, input or script is unusable.
    """
    try:
        definition = load_file(file)
        run_input = _read_value(input_, "input")
        raw_script = None
        if script is not None:
            raw_script = _read_value(script if script.startswith("@") else "@" + script, "script")
            if raw_script is not None and not isinstance(raw_script, dict):
                raise HeadraceError(
                    ErrorCode.INPUT_INVALID,
                    "a script is a mapping with tasks/signals/approvals/children/control",
                )
        try:
            parsed = Script.from_dict(raw_script)
        except (ValueError, TypeError) as exc:
            raise HeadraceError(ErrorCode.INPUT_INVALID, f"script {script}: {exc}") from None
        sim = Simulation(definition, run_input, parsed, run_id=run_id).run()
    except HeadraceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    if fmt is Format.JSON:
        typer.echo(json.dumps(sim.to_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(sim.timeline())
    if sim.state.status in ("failed", "terminated"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
