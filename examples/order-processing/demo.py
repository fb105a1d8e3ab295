"""``make demo``: headrace end to end, on this machine, in about half a minute.

1. ``headrace dev up``: a local Apache Kafka, every topic and every headrace
   service in the background (orchestrator, router, timers, tasks, the HTTP
   connector, signals, the query API);
2. the example's own processes, beside them: the shop (inventory, payments and
   shipping over HTTP, ``shop.py``) and the order service (a worker written
   with the headrace SDK, ``orders_worker.py``);
3. waits until all of them answer — or fails, naming the one that did not;
4. ``headrace deploy`` the order-processing workflow;
5. ``headrace start ... --wait`` three orders at once and shows their progress:
   one goes through, one has its card declined and is compensated, one meets a
   payment processor that is down for a moment and is retried;
6. ``headrace history RUN --verify``: each run's timeline, its hash chain checked;
   then a summary, which fails the demo if an order did not end as it should.

Everything keeps running afterwards; a second ``make demo`` places three new
orders on the running stack. ``make demo-down`` (``headrace dev down``) stops it
all, the example's processes included.

Settings (environment): ``HEADRACE_HOME`` (state, logs, the Kafka jars; default
``~/.cache/headrace``), ``HEADRACE_KAFKA_PORT`` (9092), ``HEADRACE_DEV_WEB_PORT``
(6066: the services' metrics ports count up from it), ``HEADRACE_API_PORT`` and
``HEADRACE_API_URL`` (8080), ``HEADRACE_DEMO_PORT`` (8480: the shop),
``HEADRACE_DEMO_DEADLINE`` (seconds each stage may take, 120).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headrace.dev import KafkaCluster, is_free, port_owner
from headrace.dev.services import SERVICES, DevService, web_port_base
from headrace.settings import Settings

HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "order-processing.yaml"
WORKFLOW = "order-processing"
SHOP_PORT_IN_DEFINITION = 8480
HEADRACE = str(Path(sys.executable).with_name("headrace"))
SHELL_BOOTSTRAP = os.environ.get("HEADRACE_BOOTSTRAP")  # the demo uses its own cluster's

console = Console(highlight=False)


def fail(message: str, hint: str | None = None) -> NoReturn:
    console.print(f"\n[bold red]✗ demo failed:[/] {message}")
    if hint:
        console.print(hint)
    console.print(
        "[dim]The stack stays up for a look; `make demo-down` (headrace dev down) stops it.[/]"
    )
    sys.exit(1)


def stage(n: int, text: str) -> None:
    console.print(f"\n[bold cyan][{n}/6][/] [bold]{text}[/]")


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"


# -- the pieces ---------------------------------------------------------------------------


@dataclass
class Order:
    """One of the demo's orders and what the driver saw of its run."""

    label: str
    file: str
    scenario: str
    expect: str  # completed | failed
    run_id: str = ""
    status: str = "?"
    detail: Any = None
    retries: int = 0
    compensations: list[str] = field(default_factory=list)
    last: str = "no event yet"
    verified: bool | None = None


ORDERS = [
    Order("A-1001", "happy.json", "happy path", "completed"),
    Order("B-1002", "declined.json", "card declined", "failed"),
    Order("C-1003", "retried.json", "payment 503 once", "completed"),
]
COMPENSATED = ["release-inventory", "cancel-order"]  # what B-1002 must undo, in this order


def demo_services(shop_port: int) -> list[DevService]:
    """The example's processes, run like the platform's (``headrace dev down`` stops them)."""
    env = (("PYTHONPATH", str(HERE)), ("HEADRACE_LOG_FORMAT", "text"))
    return [
        DevService(
            "demo-shop",
            "shop",
            ("--port", "{port}"),
            port_from=lambda: shop_port,
            health="/healthz",
            env=env,
        ),
        DevService(
            "demo-orders-worker",
            "headrace",
            ("worker", "run", "orders_worker:worker", "--metrics-port", "{port}"),
            port_offset=9,
            env=env,
        ),
    ]


def task_steps() -> set[str]:
    """Names of the task steps of the definition's main flow (for the progress)."""
    doc = yaml.safe_load(DEFINITION.read_text())
    names: set[str] = set()

    def walk(steps: list[dict[str, Any]]) -> None:
        for s in steps:
            if s.get("kind") == "task":
                names.add(s["name"])
            for branch in s.get("branches") or []:
                walk(branch.get("steps") or [])
            walk(s.get("steps") or [])

    walk(doc.get("steps") or [])
    return names


# -- stages -------------------------------------------------------------------------------


def platform_up(env: dict[str, str], deadline_s: float) -> str:
    """``headrace dev up``; returns the bootstrap of the cluster it runs."""
    settings = Settings()
    kafka = settings.home / "dev" / "kafka"
    # The services it starts get the cluster's address; this is what it will be.
    last = KafkaCluster.open(kafka, settings.home)
    env["HEADRACE_BOOTSTRAP"] = (
        last.bootstrap if last is not None else f"127.0.0.1:{settings.kafka_port}"
    )
    console.print(f"[dim]$ headrace dev up[/]   (state in {settings.home})")
    try:
        # The first run downloads Kafka (~100 MB from Maven Central): allow for it.
        result = subprocess.run([HEADRACE, "dev", "up"], env=env, timeout=max(deadline_s, 900))
    except subprocess.TimeoutExpired:
        fail("`headrace dev up` did not finish within 15 minutes")
    if result.returncode != 0:
        fail("`headrace dev up` failed (its message is above)")
    cluster = KafkaCluster.open(kafka, settings.home)
    if cluster is None:
        fail(f"`headrace dev up` left no cluster state in {kafka}")
    return cluster.bootstrap


def start_example(settings: Settings, services: list[DevService]) -> None:
    for service in services:
        port = service.http_port()
        running = service.current(settings.home)
        if running is None:
            service.process(settings.home).stop()  # one with other arguments: restart it
        if running is None and port is not None and not is_free(port):
            owner = port_owner(port)
            variable = (
                "HEADRACE_DEMO_PORT" if service.name == "demo-shop" else "HEADRACE_DEV_WEB_PORT"
            )
            fail(
                f"port {port}, needed by {service.name}, is taken"
                + (f" (held by {owner})" if owner else ""),
                f"Stop that process, or choose another port with {variable}=<port> make demo.",
            )
        pid = service.start(settings)
        state = "already running" if running else "started"
        console.print(
            f"{service.name}: {state}, pid {pid}, {service.health_url()}, "
            f"log {service.process(settings.home).output}"
        )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return str(resp.read().decode())


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in text)


PARTITIONED = ("tasks", "timers", "signals")  # ready once they own every partition


def wait_ready(settings: Settings, services: list[DevService], deadline_s: float) -> None:
    """Until every process answers on its port (and the partitioned services own their
    partitions); fails naming the first one that died or stayed silent."""
    started = time.monotonic()
    deadline = started + deadline_s
    pending = {s.name: s for s in services}
    last_problem: dict[str, str] = {}
    while pending:
        for name, service in list(pending.items()):
            proc = service.process(settings.home)
            if proc.pid() is None:
                fail(
                    f"{name} is not running — it exited; the end of its log "
                    f"({proc.output}):\n{log_tail(proc.output)}",
                )
            url = service.health_url()
            assert url is not None
            try:
                body = _get(url)
            except (OSError, urllib.error.URLError) as exc:
                last_problem[name] = f"no answer at {url} ({getattr(exc, 'reason', exc)})"
                continue
            if name in PARTITIONED:  # their health URL is /metrics
                owned = _metric(body, f"headrace_{name}_active_partitions")
                if owned is None or owned < settings.partitions:
                    last_problem[name] = f"owns {owned or 0} of {settings.partitions} partitions"
                    continue
            console.print(f"  [green]✓[/] {name:<20} {url}  [dim]({elapsed(started)})[/]")
            del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            lines = "\n".join(
                f"  {n}: {last_problem.get(n, 'no answer')}; log {s.process(settings.home).output}"
                for n, s in pending.items()
            )
            fail(
                f"not everything came up within {deadline_s:.0f} s:\n{lines}",
                "Look at those logs; on a slow machine raise HEADRACE_DEMO_DEADLINE.",
            )
        time.sleep(0.25)


def deploy(env: dict[str, str], settings: Settings, shop_port: int) -> None:
    path = DEFINITION
    if shop_port != SHOP_PORT_IN_DEFINITION:
        # The definition names the shop's address; the demo's shop listens elsewhere.
        path = settings.home / "dev" / "services" / "demo-shop" / DEFINITION.name
        path.write_text(
            DEFINITION.read_text().replace(
                f"127.0.0.1:{SHOP_PORT_IN_DEFINITION}", f"127.0.0.1:{shop_port}"
            )
        )
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    console.print(f"[dim]$ headrace deploy {shown}[/]")
    result = subprocess.run(
        [HEADRACE, "deploy", str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        conflict = "HR-DEF-003" in result.stderr
        fail(
            "the workflow could not be deployed",
            "A different order-processing@1 is deployed already (an edited example, or another "
            "HEADRACE_DEMO_PORT): `headrace dev down --wipe` starts afresh, or raise `version:`."
            if conflict
            else None,
        )


LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\w+)\s*(.*)$")


def _field(summary: str, name: str) -> str | None:
    found = re.search(rf"(?:^| ){name}=(.*?)(?= \w+=|$)", summary)
    return found.group(1) if found else None


def _ms(iso: str) -> int:
    """Epoch milliseconds of a timeline's ``2026-01-01T00:00:00.000Z``."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


class Progress:
    """Prints what matters of each run's events as ``headrace start --wait`` reports them,
    with the time the event was recorded."""

    def __init__(self, tasks: set[str]) -> None:
        self.tasks = tasks
        self.lock = threading.Lock()

    def say(self, order: Order, when: str, text: str) -> None:
        with self.lock:
            console.print(
                f"  [dim]{when[11:23]:<12}[/]  [bold]{order.label}[/]  {text}",
                no_wrap=True,
                overflow="ellipsis",
            )

    def event(self, order: Order, line: str) -> None:
        m = LINE.match(line)
        if m is None:
            return
        when, kind, summary = m.group(2), m.group(3), m.group(4)
        step = _field(summary, "step") or ""
        order.last = f"{kind} {step}".strip()
        # the CLI shortens summaries; an error's code is what fits ("http.5xx: POST http…")
        error = (_field(summary, "error") or "").split(":")[0]
        if kind == "StepCompleted" and step in self.tasks:
            self.say(order, when, f"[green]✓[/] {step}")
        elif kind == "StepFailed" and step not in self.tasks:
            self.say(order, when, f"[red]✗[/] {step}: {error}")
        elif kind == "TaskFailed":
            attempt = _field(summary, "attempt")
            self.say(order, when, f"[yellow]![/] {step} attempt {attempt} failed: {error}")
        elif kind == "TaskRetryScheduled":
            order.retries += 1
            attempt, due = _field(summary, "attempt"), _field(summary, "due")
            after = f" in {(int(due) - _ms(when)) / 1000:.1f}s" if due and due.isdigit() else ""
            self.say(order, when, f"[yellow]↻[/] {step}: attempt {attempt}{after}")
        elif kind == "ErrorCaught":
            self.say(order, when, f"[yellow]→[/] {step}: the error is caught")
        elif kind == "CompensationStarted":
            self.say(order, when, "[magenta]↩[/] the run failed: undoing what it did")
        elif kind == "CompensationStepCompleted":
            try:
                comp = str(json.loads(summary).get("compensation"))
            except (ValueError, AttributeError):
                comp = _field(summary, "compensation") or "?"
            order.compensations.append(comp)
            self.say(order, when, f"[magenta]↩ ✓[/] {comp}")
        elif kind in ("RunCompleted", "RunFailed"):
            colour = "green" if kind == "RunCompleted" else "red"
            self.say(order, when, f"[bold {colour}]{kind}[/]")


def run_orders(env: dict[str, str], deadline_s: float) -> None:
    tag = time.strftime("%H%M%S") + secrets.token_hex(2)
    progress = Progress(task_steps())
    procs: list[tuple[Order, subprocess.Popen[str], threading.Thread]] = []
    command = f"headrace start {WORKFLOW} --input @orders/<file> --run-id <run> --wait"
    console.print(f"[dim]$ {command}[/]")
    for order in ORDERS:
        order.run_id = f"{order.label}-{tag}"
        argv = [
            HEADRACE,
            "start",
            WORKFLOW,
            "--input",
            f"@{HERE / 'orders' / order.file}",
            "--run-id",
            order.run_id,
            "--wait",
            "--timeout",
            f"{deadline_s:.0f}s",
        ]
        console.print(
            f"  [bold]{order.label}[/]  {order.scenario:<17} run [bold]{order.run_id}[/]  "
            f"[dim]--input @orders/{order.file}[/]"
        )
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

        def follow(order: Order = order, proc: subprocess.Popen[str] = proc) -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if LINE.match(line):
                    progress.event(order, line)
                elif line.strip():
                    progress.say(order, "", f"[red]{escape(line.rstrip())}[/]")

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        procs.append((order, proc, reader))
    console.print("[dim]what matters of their events, as they happen:[/]")
    for order, proc, reader in procs:
        # stderr is the reader thread's; stdout holds two lines, read after the exit.
        try:
            proc.wait(timeout=deadline_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        out = proc.stdout.read()
        reader.join(5)
        status, _, detail = out.strip().rpartition("\n")[2].partition(" ")
        if proc.returncode == 124 or status not in ("completed", "failed"):
            fail(
                f"order {order.label} (run {order.run_id}) did not finish within "
                f"{deadline_s:.0f} s; its last event: {order.last}",
                "Its events so far: `.venv/bin/headrace history "
                f"{order.run_id}`; the services' logs: "
                f"{Settings().home / 'dev' / 'services'}/*/service.log",
            )
        order.status = status
        try:
            order.detail = json.loads(detail)
        except ValueError:
            order.detail = detail


def timelines(env: dict[str, str]) -> None:
    for order in ORDERS:
        console.rule(f"[bold]{order.label}[/] — {order.scenario}", align="left")
        console.print(f"[dim]$ headrace history {order.run_id} --verify[/]")
        sys.stdout.flush()
        result = subprocess.run(
            [HEADRACE, "history", order.run_id, "--verify"], env=env, timeout=120
        )
        order.verified = result.returncode == 0


def summary() -> list[str]:
    """Prints the table; returns what did not go as it should."""
    table = Table(title="Summary", title_justify="left")
    for col in ("order", "scenario", "outcome", "retries", "compensated", "hash chain"):
        table.add_column(col)
    problems: list[str] = []
    for o in ORDERS:
        colour = "green" if o.status == "completed" else "red"
        outcome = f"[{colour}]{o.status}[/]"
        if isinstance(o.detail, dict) and o.status == "failed":
            outcome += f" ({o.detail.get('code')})"
        table.add_row(
            o.label,
            o.scenario,
            outcome,
            str(o.retries),
            ", ".join(o.compensations) or "-",
            "[green]verified[/]" if o.verified else "[red]BROKEN[/]",
        )
        if o.status != o.expect:
            problems.append(f"{o.label} {o.status}, expected {o.expect}")
        if not o.verified:
            problems.append(f"{o.label}: its hash chain did not verify")
    declined, retried = ORDERS[1], ORDERS[2]
    if declined.compensations != COMPENSATED:
        problems.append(f"{declined.label} compensated {declined.compensations}, not {COMPENSATED}")
    if retried.retries < 1:
        problems.append(f"{retried.label} was not retried")
    console.print(table)
    for o in ORDERS:
        if isinstance(o.detail, dict) and o.detail.get("message"):
            console.print(f"  {o.label} {o.status}: {escape(str(o.detail['message']))}")
    return problems


def look_further(settings: Settings, bootstrap: str, shop_port: int) -> None:
    hr = ".venv/bin/headrace"
    # The commands below (and `make demo-down`) need the settings this demo ran with.
    exports = [
        f"export {k}={v}"
        for k, v in sorted(os.environ.items())
        if k.startswith("HEADRACE_") and k not in ("HEADRACE_BOOTSTRAP",)
    ]
    if bootstrap != "127.0.0.1:9092" or SHELL_BOOTSTRAP not in (None, bootstrap):
        exports.insert(0, f"export HEADRACE_BOOTSTRAP={bootstrap}")
    rows = [
        (f"{hr} runs --type {WORKFLOW}", f"every run, from the query API ({settings_api_url()})"),
        (f"{hr} history {ORDERS[1].run_id} --verify", "a run's events (--format json: all)"),
        (f"{hr} dlq list", "dead-lettered tasks (none in this demo)"),
        (f"curl -s http://127.0.0.1:{shop_port}/state", "the shop's side: stock, charges, ..."),
        (f"tail -f {settings.home / 'dev' / 'services'}/*/service.log", "every service's log"),
        (f"kcat -b {bootstrap} -C -t {settings.topic_prefix}events -e", "any Kafka client"),
        ("make demo", "three more orders on the running stack"),
        ("make demo-down", f"stop it all: {hr} dev down [--wipe]"),
    ]
    width = max(len(cmd) for cmd, _ in rows)
    console.print("\n[bold]Look further[/] — everything is still running:")
    for line in exports:
        console.print(f"  {line}")
    for cmd, what in rows:
        console.print(f"  {cmd:<{width}}  [dim]{what}[/]")
    console.print(
        "  Kafka UI: none runs here (no Docker) — the topics are plain Kafka, any client reads\n"
        "  them; with Docker, `docker compose up -d` runs the stack with Kafka UI on :8081."
    )


def settings_api_url() -> str:
    from headrace.services.api.config import ApiSettings

    return ApiSettings().url


def show_runs(env: dict[str, str]) -> None:
    console.print(f"[dim]$ headrace runs --type {WORKFLOW} --limit 6[/]")
    sys.stdout.flush()
    result = subprocess.run(
        [HEADRACE, "runs", "--type", WORKFLOW, "--limit", "6"], env=env, timeout=60
    )
    if result.returncode != 0:
        console.print("[yellow]the query API did not answer (see above); the demo goes on[/]")


def main() -> None:
    began = time.monotonic()
    deadline_s = float(os.environ.get("HEADRACE_DEMO_DEADLINE") or 120)
    shop_port = int(os.environ.get("HEADRACE_DEMO_PORT") or SHOP_PORT_IN_DEFINITION)
    console.print(
        "[bold]headrace demo[/] — Kafka, the platform, and an order-processing saga, end to end"
    )
    if shutil.which("java") is None:
        fail(
            "java is not on PATH: Kafka runs as a plain JVM",
            "Install Java ≥ 17 (and Maven, to fetch Kafka once): "
            "apt-get install openjdk-17-jre-headless maven",
        )
    if os.environ.get("HEADRACE_API_PORT") and not os.environ.get("HEADRACE_API_URL"):
        # The CLI and the signal service find the API by its URL.
        os.environ["HEADRACE_API_URL"] = f"http://127.0.0.1:{os.environ['HEADRACE_API_PORT']}"

    stage(1, "Kafka and the headrace services")
    env = dict(os.environ)
    bootstrap = platform_up(env, deadline_s)
    env["HEADRACE_BOOTSTRAP"] = os.environ["HEADRACE_BOOTSTRAP"] = bootstrap
    settings = Settings()
    web_port_base()  # a bad HEADRACE_DEV_WEB_PORT fails here, with its name

    stage(2, "The example's domain services and worker")
    example = demo_services(shop_port)
    start_example(settings, example)

    stage(3, "Waiting until everything answers")
    wait_ready(settings, [*SERVICES, *example], deadline_s)

    stage(4, "Deploying the workflow")
    deploy(env, settings, shop_port)

    stage(5, "Three orders at once")
    run_orders(env, deadline_s)

    stage(6, "Each run's timeline, its hash chain verified")
    timelines(env)
    console.print()
    show_runs(env)
    console.print()
    problems = summary()
    if problems:
        fail("; ".join(problems))
    console.print(
        f"[bold green]✓ demo complete[/] in {elapsed(began)}: one order shipped, one declined "
        "and compensated, one retried and shipped."
    )
    look_further(settings, bootstrap, shop_port)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        console.print(
            "\n[yellow]interrupted[/] — the stack keeps running; `make demo-down` stops it"
        )
        sys.exit(130)
