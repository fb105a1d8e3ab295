"""Fixtures for the deployment-file tests: ``deploy/check`` run once, its renderings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_kit import Manifests, load_objects, run_check


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``deploy/check --render`` filled: ``<values>.yaml`` per values set."""
    out = tmp_path_factory.mktemp("rendered")
    done = run_check("--render", out)
    if done.returncode != 0:
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        pytest.fail(f"deploy/check failed ({done.returncode}):\n{output}")
    return out


@pytest.fixture(scope="session")
def manifests(rendered: Path) -> Iterator[dict[str, Manifests]]:
    """Every values set's rendering by name: ``default``, ``scaled``, ``minimal``."""
    yield {p.stem: Manifests(load_objects(p)) for p in sorted(rendered.glob("*.yaml"))}
