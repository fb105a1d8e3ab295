"""Helpers for the deployment-file tests: run ``deploy/check``, read what it checks.

``deploy/check`` builds helm and its two checkers with Go the first time (about
3 minutes on 2 cores; cached in ``~/.cache/headrace/bin`` after). Where it has
to build one and cannot (no Go, or a Go older than the tool's go.mod asks), it
exits 3 and the tests that need it skip, saying why; the others still run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "deploy" / "check"
CHART = REPO / "deploy" / "helm" / "headrace"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

# Services that keep RocksDB under HEADRACE_DATA_DIR: a volume each, and in
# Kubernetes a StatefulSet (the API's views can be rebuilt, but only by
# replaying all of `events`).
STATEFUL = {"orchestrator", "timers", "tasks", "signals", "api"}

# The cold path builds helm from source; far above the suite's 300 s default.
CHECK_TIMEOUT = 1500
# deploy/check's exit status when a tool must be built and Go is missing or too old.
NO_GO = 3


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``deploy/check`` with this interpreter's kubernetes-validate; output captured.

    Skips the calling test when deploy/check cannot build its tools for want of Go.
    """
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(CHECK), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT,
        check=False,
    )
    if done.returncode == NO_GO:
        reason = done.stderr.strip().splitlines()[-1:] or ["deploy/check: no Go to build with"]
        pytest.skip(reason[0])
    return done


def load_objects(path: Path) -> list[dict[str, Any]]:
    """The Kubernetes objects of a rendered multi-document file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class Manifests:
    """One rendering of the chart, indexed by kind and name."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert found, f"no {kind} named {name} in the rendered chart"
        return found[0]

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Deployments and StatefulSets by component (the `headrace serve` name)."""
        return {
            o["metadata"]["labels"]["app.kubernetes.io/component"]: o
            for o in self.of("Deployment") + self.of("StatefulSet")
        }

    def config(self) -> dict[str, str]:
        """The data of the one ConfigMap (the HEADRACE_* settings)."""
        (cm,) = self.of("ConfigMap")
        return dict(cm["data"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The one container of a workload's pods."""
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(c)


def cli_root() -> Any:
    """The ``headrace`` command as Typer builds it (Typer's own click: groups have ``commands``)."""
    from headrace.cli.main import app

    return typer.main.get_command(app)


def serve_commands() -> dict[str, Any]:
    """``headrace serve``'s sub-commands, from the real CLI."""
    return dict(cli_root().commands["serve"].commands)


def parse_cli(argv: list[str]) -> Any:
    """Parse ``headrace <argv>`` as the CLI would, without running it (raises on bad options)."""
    cmd, args = cli_root(), list(argv)
    while hasattr(cmd, "commands"):
        assert args, f"`headrace {' '.join(argv)}` names a group, not a command"
        name = args.pop(0)
        assert name in cmd.commands, f"`headrace {' '.join(argv)}`: no command {name!r}"
        cmd = cmd.commands[name]
    return cmd.make_context(" ".join(argv[: len(argv) - len(args)]), args)


def option_value(argv: list[str], *flags: str) -> str | None:
    """The value after the first of ``flags`` in ``argv``."""
    for i, arg in enumerate(argv[:-1]):
        if arg in flags:
            return argv[i + 1]
    return None


def url_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, f"{url} names no port"
    return port


def compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved)."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def chart_values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(data, dict)
    return data


def known_settings() -> set[str]:
    """Every HEADRACE_* variable a settings class reads."""
    from headrace.services.api.config import ApiSettings
    from headrace.settings import Settings

    return {f"HEADRACE_{n.upper()}" for n in Settings.model_fields} | {
        f"HEADRACE_API_{n.upper()}" for n in ApiSettings.model_fields
    }


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, ignore_file: Path = REPO / ".dockerignore") -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context.

    Docker's rule: patterns apply in order, the last one matching the path or
    any of its parent folders decides, and ``!`` re-includes.
    """
    rules = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _glob_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded
