"""``headrace dev``: a local Kafka and the headrace services, for development.

``headrace dev up`` starts Kafka, creates every topic and starts the services
of :data:`headrace.dev.services.SERVICES`; ``headrace dev down`` stops them
all. ``headrace dev kafka up|down|status`` handles only the broker(s).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headrace.dev import ClusterSpec, KafkaCluster
from headrace.dev.services import SERVICES, other_services, services_root
from headrace.errors import HeadraceError
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics

app = typer.Typer(help="Run a local Kafka and every headrace service for development.")
kafka_app = typer.Typer(help="The local Apache Kafka (KRaft) broker or 3-node cluster.")
app.add_typer(kafka_app, name="kafka")

out = Console()
err = Console(stderr=True)

BrokersOpt = Annotated[
    int | None,
    typer.Option(
        "--brokers",
        min=1,
        help="1, or 3 for a replicated cluster (RF 3, min ISR 2) [the last used, else 1]",
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port", help="client port of node 1 (node i uses port+2(i-1)) [HEADRACE_KAFKA_PORT]"
    ),
]
DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="folder of the cluster's data, logs and pid files [<home>/dev/kafka]"
    ),
]
WipeOpt = Annotated[bool, typer.Option("--wipe", help="also delete the cluster's data")]


class RichProgress:
    """Spinners for long steps, ticks when they finish."""

    def step(self, text: str) -> AbstractContextManager[None]:
        return self._step(text)

    @contextmanager
    def _step(self, text: str) -> Iterator[None]:
        started = time.monotonic()
        with err.status(f"{text}…"):
            yield
        err.print(f"[green]✓[/] {text} [dim]({time.monotonic() - started:.1f}s)[/]")

    def info(self, text: str) -> None:
        err.print(f"[dim]•[/] {text}")


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a HeadraceError into a red message and exit status 1 (no traceback)."""
    try:
        yield
    except HeadraceError as exc:
        err.print(f"[red]error[/] [bold]{exc.code.code}[/] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


def _root(settings: Settings, folder: Path | None) -> Path:
    return folder if folder is not None else settings.home / "dev" / "kafka"


def _cluster(
    settings: Settings, brokers: int | None, port: int | None, folder: Path | None
) -> KafkaCluster:
    """The cluster to bring up: flags win, then the shape it had last time, then settings."""
    last = _existing(settings, folder)
    spec = ClusterSpec(
        brokers=brokers or (last.spec.brokers if last else 1),
        port=port or (last.spec.port if last else settings.kafka_port),
        version=settings.kafka_version,
    )
    return KafkaCluster(_root(settings, folder), spec, settings.home, RichProgress())


def _existing(settings: Settings, folder: Path | None) -> KafkaCluster | None:
    return KafkaCluster.open(_root(settings, folder), settings.home, RichProgress())


def _bootstrap_hint(settings: Settings, bootstrap: str) -> None:
    out.print(f"bootstrap: {bootstrap}", highlight=False)
    if settings.bootstrap != bootstrap:
        err.print(
            f"[yellow]note[/] HEADRACE_BOOTSTRAP is {settings.bootstrap}; for this cluster run\n"
            f"  export HEADRACE_BOOTSTRAP={bootstrap}",
            highlight=False,
        )


@kafka_app.command("up")
def kafka_up(brokers: BrokersOpt = None, port: PortOpt = None, folder: DirOpt = None) -> None:
    """Download Kafka if needed, format its storage, start it and wait until it answers."""
    settings = Settings()
    with _reported():
        bootstrap = _cluster(settings, brokers, port, folder).up()
    _bootstrap_hint(settings, bootstrap)


@kafka_app.command("down")
def kafka_down(folder: DirOpt = None, wipe: WipeOpt = False) -> None:
    """Stop the local Kafka (SIGTERM, wait, SIGKILL after 30 s)."""
    settings = Settings()
    with _reported():
        _stop_kafka(settings, folder, wipe)


def _stop_kafka(settings: Settings, folder: Path | None, wipe: bool) -> None:
    cluster = _existing(settings, folder)
    if cluster is None:
        out.print(f"no local Kafka in {_root(settings, folder)}", highlight=False)
        return
    with cluster.progress.step(f"Stopping Kafka in {cluster.root}"):
        stopped = cluster.down()
    out.print(f"stopped {len(stopped)} node(s)" if stopped else "Kafka was not running")
    if wipe:
        cluster.wipe()
        out.print(f"deleted the data in {cluster.root}", highlight=False)


@kafka_app.command("status")
def kafka_status(folder: DirOpt = None) -> None:
    """What runs where: pid, ports, data dir, log, and whether it answers. Exit 1 if not all up."""
    settings = Settings()
    cluster = _existing(settings, folder)
    if cluster is None:
        out.print(
            f"no local Kafka in {_root(settings, folder)} — start one with `headrace dev kafka up`",
            highlight=False,
        )
        raise typer.Exit(1)
    rows = cluster.status()
    table = Table(title=f"Kafka {cluster.spec.version} in {cluster.root}")
    for col in ("node", "pid", "port", "controller", "running", "answers"):
        table.add_column(col)
    for s in rows:
        table.add_row(
            str(s.node_id),
            str(s.pid or "-"),
            str(s.port),
            str(s.controller_port),
            "[green]yes[/]" if s.alive else "[red]no[/]",
            "[green]yes[/]" if s.answers else "[red]no[/]",
        )
    out.print(table)
    for s in rows:
        out.print(
            f"node {s.node_id}: data {s.data_dir}\n        log  {s.log_file}", highlight=False
        )
    out.print(f"bootstrap: {cluster.bootstrap}", highlight=False)
    if not all(s.answers for s in rows):
        raise typer.Exit(1)


@app.command("up")
def dev_up(brokers: BrokersOpt = None, port: PortOpt = None, folder: DirOpt = None) -> None:
    """Start Kafka, create every headrace topic, then start the headrace services."""
    settings = Settings()
    with _reported():
        bootstrap = _cluster(settings, brokers, port, folder).up()
        bound = settings.model_copy(update={"bootstrap": bootstrap})
        report = ensure_topics(bound)
        out.print(f"topics: {len(report.created)} created, {len(report.found)} found")
        for warning in report.mismatches:
            err.print(f"[yellow]warning[/] {warning}", highlight=False)
        for service in SERVICES:
            pid = service.start(bound)
            where = f", {service.health_url()}" if service.http_port() else ""
            out.print(
                f"{service.name}: pid {pid}{where}, log {service.process(bound.home).output}",
                highlight=False,
            )
    _bootstrap_hint(settings, bootstrap)


@app.command("down")
def dev_down(folder: DirOpt = None, wipe: WipeOpt = False) -> None:
    """Stop the headrace services (newest first), then Kafka.

    Processes others started beside them under <home>/dev/services (the demo's
    domain services and worker, `make demo`) are stopped first. `--wipe` also
    deletes the services' local state (RocksDB), which belongs to Kafka's data.
    """
    settings = Settings()
    with _reported():
        for name, proc in other_services(settings.home):
            if proc.stop():
                out.print(f"stopped {name}")
        for service in reversed(SERVICES):
            if service.stop(settings):
                out.print(f"stopped {service.name}")
        _stop_kafka(settings, folder, wipe)
        if wipe:
            root = services_root(settings.home)
            data = sorted(root.glob("*/data")) if root.is_dir() else []
            for path in data:
                shutil.rmtree(path, ignore_errors=True)
            if data:
                out.print(f"deleted the services' local state in {root}", highlight=False)
