"""docker-compose.yml, the Dockerfile and the Helm chart: valid, and deploying every service.

``deploy/check`` validates the files with BuildKit's parser, against the Compose
specification and against Kubernetes' schemas (see its header); these tests run
it, show that it fails on a broken file, and check in Python what no schema
knows: that every
``headrace serve`` command is deployed by both, with command lines the real
CLI accepts and ports that agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_kit import (
    CHART,
    CHECK,
    COMPOSE,
    DOCKERFILE,
    NO_GO,
    REPO,
    STATEFUL,
    Manifests,
    chart_values,
    compose,
    dockerignored,
    known_settings,
    option_value,
    parse_cli,
    run_check,
    serve_commands,
    url_port,
)

# Runs deploy/check, which builds helm with Go the first time.
pytestmark = pytest.mark.timeout(1800)

INFRA = {"kafka", "kafka-ui", "topics"}


def test_deploy_check_renders_every_values_set(rendered: Path) -> None:
    names = {p.stem for p in rendered.glob("*.yaml")}
    ci = {p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")}
    assert names == {"default"} | ci


@pytest.mark.parametrize(
    ("before", "after", "complaint"),
    [
        ("condition: service_completed_successfully", "condition: service_done", "condition"),
        ("- api-data:/var/lib/headrace/data", "- apidata:/var/lib/headrace/data", "apidata"),
    ],
    ids=["schema", "consistency"],
)
def test_deploy_check_fails_on_a_broken_compose_file(
    tmp_path: Path, before: str, after: str, complaint: str
) -> None:
    text = COMPOSE.read_text()
    assert before in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(before, after, 1))
    done = run_check("--compose", broken)
    assert done.returncode != 0
    assert complaint in done.stderr


@pytest.mark.parametrize(
    ("before", "after", "complaint"),
    [
        ("COPY schemas ./schemas", "COPPY schemas ./schemas", "unknown instruction"),
        ("FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE} as build", "FromAsCasing"),
    ],
    ids=["syntax", "build-check"],
)
def test_deploy_check_fails_on_a_broken_dockerfile(
    tmp_path: Path, before: str, after: str, complaint: str
) -> None:
    text = DOCKERFILE.read_text()
    assert before in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(before, after, 1))
    done = run_check("--dockerfile", broken)
    assert done.returncode != 0
    assert complaint in done.stderr


def _broken_chart(tmp_path: Path, template: str, before: str, after: str) -> Path:
    chart = tmp_path / "headrace"
    shutil.copytree(CHART, chart)
    path = chart / template
    text = path.read_text()
    assert before in text
    path.write_text(text.replace(before, after, 1))
    return chart


def test_deploy_check_fails_on_an_invalid_kubernetes_object(tmp_path: Path) -> None:
    chart = _broken_chart(
        tmp_path,
        "templates/statefulsets.yaml",
        "podManagementPolicy: Parallel",
        "podManagementPolicies: Parallel",
    )
    done = run_check("--chart", chart)
    assert done.returncode != 0
    assert "podManagementPolicies" in done.stdout + done.stderr


def test_deploy_check_fails_on_values_the_schema_rejects(tmp_path: Path) -> None:
    chart = _broken_chart(tmp_path, "ci/scaled-values.yaml", "replicas: 3", "replica: 3")
    done = run_check("--chart", chart)
    assert done.returncode != 0
    assert "replica" in done.stdout + done.stderr


def test_deploy_check_says_it_needs_a_newer_go_instead_of_failing(tmp_path: Path) -> None:
    """Exit 3 (tests skip) when a tool must be built with a Go older than its go.mod asks."""
    fake = tmp_path / "path"
    fake.mkdir()
    (fake / "go").write_text(
        '#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go1.20.0 && exit 0\nexit 1\n'
    )
    (fake / "go").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "HEADRACE_HOME": str(tmp_path / "home"),
        "GOTOOLCHAIN": "local",
    }
    done = subprocess.run([CHECK], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == NO_GO, done.stderr
    assert re.search(r"needs Go 1\.\d+(\.\d+)? or newer to build, this is Go 1\.20\.0", done.stderr)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` the way helm merges a values file into the defaults."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def test_values_schema_takes_the_values_files_and_exactly_the_serve_commands() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    defaults = chart_values()
    validator.validate(defaults)
    for path in (CHART / "ci").glob("*-values.yaml"):
        validator.validate(_merged(defaults, yaml.safe_load(path.read_text())))
    services = schema["properties"]["services"]
    assert set(services["propertyNames"]["enum"]) == set(serve_commands())
    # A misspelt service name is refused, not deployed as `headrace serve orchestrater`.
    typo = _merged(defaults, {"services": {"orchestrater": defaults["services"]["orchestrator"]}})
    (error,) = validator.iter_errors(typo)
    assert "propertyNames" in error.absolute_schema_path, error
    assert "'orchestrater' is not one of" in error.message


def test_every_serve_command_is_deployed_by_compose_and_the_chart(
    manifests: dict[str, Manifests],
) -> None:
    served = set(serve_commands())
    assert served, "headrace serve has no commands"
    in_compose = set(compose()["services"]) - INFRA
    in_values = set(chart_values()["services"])
    rendered = set(manifests["default"].workloads())
    assert in_compose == served, "docker-compose.yml services differ from `headrace serve`"
    assert in_values == served, "chart values.yaml services differ from `headrace serve`"
    assert rendered == served, "the chart's default rendering runs other services"


def _compose_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if n not in INFRA}


def test_compose_commands_parse_with_the_cli_and_health_checks_their_port() -> None:
    for name, svc in _compose_services().items():
        argv = [str(a) for a in svc["command"]]
        assert argv[:2] == ["serve", name]
        ctx = parse_cli(argv)
        port = option_value(argv, "--web-port", "--port")
        assert port is not None, f"{name}: its port is left to a default; name it"
        assert ctx.params.get("web_port", ctx.params.get("port")) == int(port)
        test = svc["healthcheck"]["test"]
        assert url_port(test[-1]) == int(port), f"{name}: healthcheck probes another port"
        assert test[-1].endswith("/healthz")
    parse_cli([str(a) for a in compose()["services"]["topics"]["command"]])


def test_compose_ports_are_the_serve_defaults() -> None:
    """Compose, the chart and `headrace serve` without options agree on every port."""
    from headrace.services.api.config import ApiSettings

    commands = serve_commands()
    values = chart_values()["services"]
    for name, svc in _compose_services().items():
        params = {p.name: p.default for p in commands[name].params}
        default = params.get("web_port") or ApiSettings.model_fields["port"].default
        port = option_value([str(a) for a in svc["command"]], "--web-port", "--port")
        assert int(str(port)) == default == values[name]["port"], name


def test_compose_starts_services_after_kafka_and_topics() -> None:
    services = compose()["services"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["kafka-ui"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, svc in _compose_services().items():
        cond = svc["depends_on"]["topics"]["condition"]
        assert cond == "service_completed_successfully", name
        assert svc["image"] == services["topics"]["image"], f"{name} runs another image"


def test_compose_services_reach_kafka_on_its_container_listener() -> None:
    env = compose()["services"]["kafka"]["environment"]
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, svc in {**_compose_services(), "topics": compose()["services"]["topics"]}.items():
        assert svc["environment"]["HEADRACE_BOOTSTRAP"] == advertised["PLAINTEXT"], name


def test_compose_runs_a_single_kraft_broker_and_kafka_ui_on_it() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not [k for k in env if "ZOOKEEPER" in k]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert [v.split(":")[1] for v in kafka["volumes"]] == [env["KAFKA_LOG_DIRS"]]
    assert kafka["healthcheck"]["test"]
    # One broker: internal topics cannot ask for more replicas than it has.
    for key, value in env.items():
        if key.endswith(("_REPLICATION_FACTOR", "_MIN_ISR")):
            assert int(value) == 1, key
    ui = services["kafka-ui"]["environment"]
    assert ui["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"
    assert services["topics"]["environment"]["HEADRACE_REPLICATION_FACTOR"] == "1"


def test_compose_keeps_stateful_data_on_volumes_and_drains_on_stop() -> None:
    for name, svc in _compose_services().items():
        env = svc["environment"]
        assert {k for k in env if k.startswith("HEADRACE_")} <= known_settings(), name
        grace = re.fullmatch(r"(\d+)s", svc["stop_grace_period"])
        assert grace and int(grace.group(1)) >= 30, f"{name}: SIGKILL cuts its drain short"
        targets = [v.split(":")[1] for v in svc.get("volumes", [])]
        if name in STATEFUL:
            assert targets == [env["HEADRACE_DATA_DIR"]], f"{name}: its RocksDB is not on a volume"


def test_dockerfile_copies_what_the_build_needs_and_the_context_sends_it() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r'^ENTRYPOINT \["headrace"\]$', text, re.M)
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert {"pyproject.toml", "README.md", "headrace", "schemas"} <= set(sources)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["readme"] in sources
    assert pyproject["project"]["scripts"]["headrace"]
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not dockerignored(src), f".dockerignore leaves out {src}"
    for path in [*REPO.glob("headrace/**/*.py"), *REPO.glob("schemas/avro/*.avsc")]:
        rel = path.relative_to(REPO).as_posix()
        if "__pycache__" not in rel:
            assert not dockerignored(rel), f".dockerignore leaves out {rel}"
    for left_out in [
        ".venv/bin/python",
        "tests/conftest.py",
        ".git/HEAD",
        "headrace/__pycache__/x.pyc",
    ]:
        assert dockerignored(left_out), f".dockerignore sends {left_out} to the builder"


def test_image_user_and_data_dir_match_compose_and_the_chart(
    manifests: dict[str, Manifests],
) -> None:
    text = DOCKERFILE.read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user, "the image runs as root"
    data_dir = re.search(r"HEADRACE_DATA_DIR=(\S+)", text)
    assert data_dir
    pod = chart_values()["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (
        int(user.group(1)),
        int(user.group(2)),
        int(user.group(2)),
    )
    assert manifests["default"].config()["HEADRACE_DATA_DIR"] == data_dir.group(1)
    for svc in _compose_services().values():
        assert svc["environment"]["HEADRACE_DATA_DIR"] == data_dir.group(1)
    exposed = re.search(r"^EXPOSE ([\d ]+)$", text, re.M)
    assert exposed, "the image exposes no ports"
    ports = {s["port"] for s in chart_values()["services"].values()}
    assert set(map(int, exposed.group(1).split())) == ports


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert chart["appVersion"] == pyproject["project"]["version"]
