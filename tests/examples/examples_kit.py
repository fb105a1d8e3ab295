"""The platform for the example tests: headrace services, the example's processes, runs.

Every service is a real child process against the real broker (``ServiceProcess``):
orchestrator, timers, tasks, the HTTP connector, the order-processing example's
shop (``shop.py``) and its SDK worker (``orders_worker.py``). Waits have
deadlines and say what they waited for.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from procs import ServiceProcess
from support import wait_for

from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.outbox import command_message
from headrace.definitions import deploy
from headrace.dev import free_port_block
from headrace.errors import HeadraceError
from headrace.history import RunLog, read_run
from headrace.kafka import flush, make_producer
from headrace.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "order-processing"
TENANT = "acme"
ENDS = {
    EventType.RunCompleted: "completed",
    EventType.RunFailed: "failed",
    EventType.RunCancelled: "cancelled",
    EventType.RunTerminated: "terminated",
}


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        m = re.match(r"^(headrace_\w+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class Platform:
    """Services of one test module, started once, stopped at the end."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.procs: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc = ServiceProcess(name, argv, self.settings, self.workdir / name, env)
        self.procs[name] = proc.start()

    def start(self) -> Platform:
        p = self.ports = {
            name: free_port_block(1)
            for name in ("orchestrator", "timers", "tasks", "http", "worker", "shop")
        }
        for name in ("orchestrator", "timers", "tasks", "http"):
            self._start(
                name,
                ["-m", "headrace", "serve", name, "--web-port", str(p[name])],
                {"HEADRACE_HTTP_CIRCUIT_FAILURES": "50"},
            )
        example_env = {"PYTHONPATH": str(EXAMPLE)}
        self._start("shop", [str(EXAMPLE / "shop.py"), "--port", str(p["shop"])])
        worker = ["-m", "headrace", "worker", "run", "orders_worker:worker"]
        self._start("worker", [*worker, "--metrics-port", str(p["worker"])], example_env)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the task and timer services own every partition and the rest answer."""

        def ready() -> bool:
            for name, proc in self.procs.items():
                assert proc.alive, f"{name} exited:\n{proc.log_tail()}"
            n = self.settings.partitions
            if metrics(self.ports["tasks"]).get("headrace_tasks_active_partitions") != n:
                return False
            if metrics(self.ports["timers"]).get("headrace_timers_active_partitions") != n:
                return False
            metrics(self.ports["http"])
            metrics(self.ports["worker"])
            urllib.request.urlopen(f"{self.shop_url}/healthz", timeout=5).read()
            urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['orchestrator']}/healthz", timeout=5
            ).read()
            return True

        wait_for(ready, timeout, "every service to answer", interval=0.25)

    @property
    def shop_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['shop']}"

    def shop_state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            urllib.request.urlopen(f"{self.shop_url}/state", timeout=5).read()
        )
        return state

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop(30)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(25)}" for n, p in self.procs.items())

    # -- the CLI, as an operator runs it ---------------------------------------------

    def cli(self, *args: str) -> str:
        env = {
            **self.procs["tasks"].env,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        done = subprocess.run(
            [sys.executable, "-m", "headrace", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"headrace {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout


def deploy_text(settings: Settings, text: str, name: str = "test.yaml") -> None:
    deploy(settings, [(load_definition(text, name), text)])


def example_definition(shop_port: int) -> str:
    """order-processing.yaml, calling the shop on ``shop_port``."""
    text = (EXAMPLE / "order-processing.yaml").read_text()
    return text.replace("127.0.0.1:8480", f"127.0.0.1:{shop_port}")


def order_input(name: str) -> Any:
    return json.loads((EXAMPLE / "orders" / f"{name}.json").read_text())


def start_runs(settings: Settings, workflow: str, runs: dict[str, Any]) -> None:
    """StartRun commands ``{run_id: input}`` straight to ``commands``."""
    producer = make_producer(settings, "test-examples")
    now = int(time.time() * 1000)
    for run_id, run_input in runs.items():
        command = Command(
            f"start-{run_id}",
            TENANT,
            run_id,
            CommandType.StartRun,
            now,
            {"workflow": workflow, "version": None, "input": run_input},
        )
        m = command_message(command, settings.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)


def run_log(settings: Settings, run_id: str) -> RunLog | None:
    try:
        return read_run(settings, TENANT, run_id, timeout=10)
    except HeadraceError:
        return None


def events(settings: Settings, run_id: str) -> list[Event]:
    log = run_log(settings, run_id)
    return [] if log is None else [r.event for r in log.distinct() if r.event is not None]


def wait_ended(
    settings: Settings, run_ids: Iterable[str], timeout: float, platform: Platform
) -> dict[str, list[Event]]:
    """Every run's events once each has ended (fails with the services' logs otherwise)."""
    ended: dict[str, list[Event]] = {}

    def all_ended() -> bool:
        for run_id in run_ids:
            if run_id in ended:
                continue
            evs = events(settings, run_id)
            if any(e.type in ENDS for e in evs):
                ended[run_id] = evs
        return len(ended) == len(list(run_ids))

    try:
        wait_for(all_ended, timeout, f"runs {list(run_ids)} to end", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.logs()}") from None
    return ended


def status(evs: list[Event]) -> str:
    return next(ENDS[e.type] for e in evs if e.type in ENDS)


def of(evs: list[Event], kind: EventType, step: str | None = None) -> list[Event]:
    return [e for e in evs if e.type is kind and (step is None or e.payload.get("step") == step)]


class FlakyEndpoint:
    """``POST /ledger``: 500 while broken, then 200 ``{"entry": n}``; records idempotency keys."""

    def __init__(self) -> None:
        self.broken = True
        self.keys: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.keys.append(self.headers.get("Idempotency-Key") or "")
                if endpoint.broken:
                    status, body = 500, {"error": "the ledger database is down"}
                else:
                    status, body = 200, {"entry": len(endpoint.keys)}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        # A port below the ephemeral range (see free_port_block).
        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port_block(1)), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
