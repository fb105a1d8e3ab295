"""The headrace services ``headrace dev up`` runs in the background after Kafka.

Each entry of :data:`SERVICES` is a command line run as a detached process with
its own pid file and log under ``<home>/dev/services/<name>/``. The list is
empty until the services exist; an issue that adds a service (timers, tasks,
orchestrator, api, ...) appends one :class:`DevService` here and ``dev up``,
``dev down`` and ``dev status`` pick it up.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from headrace.dev.process import Background
from headrace.settings import Settings


@dataclass(frozen=True, slots=True)
class DevService:
    """A service started by ``headrace dev up``: a Python module run with ``-m``."""

    name: str
    module: str
    args: tuple[str, ...] = ()

    def folder(self, home: Path) -> Path:
        return home / "dev" / "services" / self.name

    def process(self, home: Path) -> Background:
        folder = self.folder(home)
        return Background(
            pid_file=folder / "service.pid",
            # Unique to this service; set in its environment by start().
            marker=f"HEADRACE_DEV_SERVICE={folder}",
            output=folder / "service.log",
        )

    def start(self, settings: Settings) -> int:
        """Start it against ``settings.bootstrap``; return its pid (the running one if up)."""
        folder = self.folder(settings.home)
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "HEADRACE_DATA_DIR": str(folder / "data"),
            "HEADRACE_DEV_SERVICE": str(folder),
        }
        argv = [sys.executable, "-m", self.module, *self.args]
        return self.process(settings.home).start(argv, cwd=folder, env=env)

    def stop(self, settings: Settings) -> bool:
        """Stop it gracefully (SIGTERM, drain); True if it was running."""
        return self.process(settings.home).stop()


SERVICES: tuple[DevService, ...] = (
    DevService("orchestrator", "headrace", ("serve", "orchestrator")),
    DevService("router", "headrace", ("serve", "router")),
    DevService("timers", "headrace", ("serve", "timers")),
)
"""What ``headrace dev up`` starts after Kafka and topics, in order (``dev down`` reverses it)."""
