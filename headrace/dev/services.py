"""The headrace services ``headrace dev up`` runs in the background after Kafka.

Each entry of :data:`SERVICES` is a command line run as a detached process with
its own pid file and log under ``<home>/dev/services/<name>/``. An issue that
adds a service appends one :class:`DevService` here and ``dev up`` and
``dev down`` pick it up.

Others may start their own processes the same way — ``make demo`` runs the
order-processing example's domain services and worker as
:class:`DevService` entries of its own — and ``headrace dev down`` stops them
too (:func:`other_services`), before the platform they depend on.

Ports: each service serves ``/metrics`` (and most ``/healthz``) on
``HEADRACE_DEV_WEB_PORT`` (6066) plus its ``port_offset``; the query API
listens on ``HEADRACE_API_PORT`` (8080).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headrace.dev.ports import is_free, port_owner
from headrace.dev.process import Background
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings

WEB_PORT_ENV = "HEADRACE_DEV_WEB_PORT"
DEFAULT_WEB_PORT = 6066
PORT = "{port}"
"""Placeholder in :attr:`DevService.args` for the service's port."""


def web_port_base() -> int:
    """The first service port of ``headrace dev up`` (``HEADRACE_DEV_WEB_PORT``, 6066)."""
    raw = os.environ.get(WEB_PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_WEB_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65500:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID, f"{WEB_PORT_ENV}={raw!r} is not a port number"
        )
    return int(raw)


def services_root(home: Path) -> Path:
    return home / "dev" / "services"


@dataclass(frozen=True, slots=True)
class DevService:
    """A service started by ``headrace dev up``: a Python module run with ``-m``.

    ``port_offset`` places its HTTP port (metrics, health) at
    :func:`web_port_base` plus the offset, or ``port_from()`` says it; ``{port}``
    in ``args`` is replaced by it. ``env`` adds environment variables.
    """

    name: str
    module: str
    args: tuple[str, ...] = ()
    port_offset: int | None = None
    port_from: Callable[[], int] | None = None
    health: str = "/metrics"
    env: tuple[tuple[str, str], ...] = ()

    def folder(self, home: Path) -> Path:
        return services_root(home) / self.name

    def http_port(self) -> int | None:
        """The port it answers HTTP on (None: it has none)."""
        if self.port_from is not None:
            return self.port_from()
        if self.port_offset is not None:
            return web_port_base() + self.port_offset
        return None

    def health_url(self) -> str | None:
        port = self.http_port()
        return None if port is None else f"http://127.0.0.1:{port}{self.health}"

    def process(self, home: Path) -> Background:
        folder = self.folder(home)
        return Background(
            pid_file=folder / "service.pid",
            # Unique to this service; set in its environment by start().
            marker=f"HEADRACE_DEV_SERVICE={folder}",
            output=folder / "service.log",
        )

    def argv(self) -> list[str]:
        port = str(self.http_port())
        return [sys.executable, "-m", self.module, *(a.replace(PORT, port) for a in self.args)]

    def current(self, home: Path) -> int | None:
        """Pid of the running process if it runs with these arguments (and port)."""
        pid = self.process(home).pid()
        if pid is None:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            return None
        return pid if argv == self.argv() else None

    def start(self, settings: Settings) -> int:
        """Start it against ``settings.bootstrap``; return its pid (the running one if up).

        One running with other arguments (another port, say) is restarted. A port
        another process holds is refused up front (``HR-CFG-003``, naming the
        holder), instead of a service that dies in the background.
        """
        proc = self.process(settings.home)
        running = self.current(settings.home)
        if running is not None:
            return running
        proc.stop()  # a stale one, started with other arguments
        port = self.http_port()
        if port is not None and not is_free(port):
            owner = port_owner(port)
            held = f" (held by {owner})" if owner else ""
            raise HeadraceError(
                ErrorCode.PORT_IN_USE,
                f"port {port} on 127.0.0.1, needed by {self.name}, is taken{held} — stop that "
                f"process, or move the services' ports with {WEB_PORT_ENV} (now "
                f"{web_port_base()}) and the API's with HEADRACE_API_PORT/HEADRACE_API_URL",
            )
        folder = self.folder(settings.home)
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "HEADRACE_DATA_DIR": str(folder / "data"),
            "HEADRACE_DEV_SERVICE": str(folder),
            **dict(self.env),
        }
        return proc.start(self.argv(), cwd=folder, env=env)

    def stop(self, settings: Settings) -> bool:
        """Stop it gracefully (SIGTERM, drain); True if it was running."""
        return self.process(settings.home).stop()


def _api_port() -> int:
    """The query API's port: ``HEADRACE_API_PORT`` (clients find it at ``HEADRACE_API_URL``)."""
    from headrace.services.api.config import ApiSettings

    return ApiSettings().port


SERVICES: tuple[DevService, ...] = (
    DevService("orchestrator", "headrace", ("serve", "orchestrator", "--web-port", PORT), 0),
    DevService("router", "headrace", ("serve", "router", "--web-port", PORT), 1),
    DevService("timers", "headrace", ("serve", "timers", "--web-port", PORT), 2),
    DevService("tasks", "headrace", ("serve", "tasks", "--web-port", PORT), 3),
    DevService("http", "headrace", ("serve", "http", "--web-port", PORT), 5),
    DevService("signals", "headrace", ("serve", "signals", "--web-port", PORT), 6),
    DevService(
        "api", "headrace", ("serve", "api", "--port", PORT), port_from=_api_port, health="/healthz"
    ),
)
"""What ``headrace dev up`` starts after Kafka and topics, in order (``dev down`` reverses it)."""


def other_services(home: Path) -> list[tuple[str, Background]]:
    """Processes started under ``<home>/dev/services/`` that are not :data:`SERVICES`
    (an example's domain services and workers), by folder name; running or not."""
    root = services_root(home)
    known = {s.name for s in SERVICES}
    found: list[tuple[str, Background]] = []
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in known):
        if (folder / "service.pid").exists():
            found.append((folder.name, DevService(folder.name, "-").process(home)))
    return found
