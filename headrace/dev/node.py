"""One local Kafka node (combined KRaft controller + broker) run as a background JVM.

A node lives in its own folder::

    node-<id>/server.properties   written by the cluster
    node-<id>/data/               KRaft metadata log and topic partitions
    node-<id>/logs/server.log     the broker's log (log4j2, deploy/kafka/log4j2.xml)
    node-<id>/stdout.log          the JVM's own output (crashes, GC warnings)
    node-<id>/broker.pid          pid of the running JVM (see :mod:`headrace.dev.process`)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from headrace.dev.jars import KafkaJars, require_program
from headrace.dev.process import STOP_TIMEOUT_S, Background
from headrace.errors import ErrorCode, HeadraceError

_quiet_client_log = logging.getLogger("headrace.dev.probe")
_quiet_client_log.setLevel(logging.CRITICAL)


def java_program() -> str:
    """The ``java`` to run brokers with: ``$JAVA_HOME/bin/java``, else the one on PATH (17+)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else ""
    if not java or not Path(java).is_file():
        java = require_program(
            "java", "the Kafka broker is a Java program", "apt-get install openjdk-17-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if match and int(match.group(1)) < 17:
        raise HeadraceError(
            ErrorCode.DEPENDENCY_MISSING,
            f"{java} is Java {match.group(1)}; Kafka 4 needs Java 17 or newer — "
            "install openjdk-17 (or newer) and put it first on PATH or in JAVA_HOME",
        )
    return java


def probe(bootstrap: str, timeout: float = 1.0) -> int | None:
    """Number of brokers the cluster reports through ``bootstrap``, or None if it doesn't answer."""
    admin = admin_probe(bootstrap)
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return None


def admin_probe(bootstrap: str) -> AdminClient:
    """An AdminClient that retries fast and keeps quiet while a broker is still starting."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "logger": _quiet_client_log,
    }
    return AdminClient(conf)


@dataclass
class BrokerNode:
    """One node of a local cluster; start/stop/kill it individually."""

    node_id: int
    dir: Path
    port: int
    controller_port: int
    heap: str = "768m"
    process: Background = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = Background(
            pid_file=self.dir / "broker.pid",
            marker=str(self.properties_file),
            output=self.dir / "stdout.log",
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def pid(self) -> int | None:
        """Pid of this node's running JVM, or None."""
        return self.process.pid()

    def alive(self) -> bool:
        return self.process.alive()

    def _jvm(self, java: str, jars: KafkaJars, log4j2: Path) -> list[str]:
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={log4j2}",
            "-cp",
            jars.classpath,
        ]

    def format(self, java: str, jars: KafkaJars, log4j2: Path, cluster_id: str) -> None:
        """Format this node's KRaft storage for ``cluster_id`` (once; later calls keep the data)."""
        if self.formatted:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._jvm(java, jars, log4j2),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0 or not self.formatted:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise HeadraceError(
                ErrorCode.INTERNAL,
                f"formatting the KRaft storage of node {self.node_id} in {self.data_dir} "
                f"failed (exit {done.returncode}):\n{tail}\n— remove {self.data_dir} and retry",
            )

    def start(self, java: str, jars: KafkaJars, log4j2: Path, die_with_parent: bool = False) -> int:
        """Start the JVM in its own session; return its pid.

        It outlives this process unless ``die_with_parent`` (test clusters).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self._jvm(java, jars, log4j2), "kafka.Kafka", str(self.properties_file)]
        return self.process.start(argv, cwd=self.dir, die_with_parent=die_with_parent)

    def wait_ready(self, brokers: int, deadline: float) -> None:
        """Wait until this node answers metadata listing ``brokers`` brokers, or raise."""
        admin = admin_probe(self.bootstrap)
        while True:
            if self.pid() is None:
                raise HeadraceError(
                    ErrorCode.KAFKA_UNAVAILABLE,
                    f"Kafka node {self.node_id} (port {self.port}) exited while starting; "
                    f"its log ends:\n{self.log_tail()}\n"
                    f"— see {self.log_file} and {self.process.output}",
                )
            try:
                seen = len(admin.list_topics(timeout=1.0).brokers)
            except KafkaException:
                seen = 0
            if seen >= brokers:
                return
            if time.monotonic() > deadline:
                raise HeadraceError(
                    ErrorCode.KAFKA_TIMEOUT,
                    f"Kafka node {self.node_id} on {self.bootstrap} did not report {brokers} "
                    f"broker(s) in time (saw {seen}); its log ends:\n{self.log_tail()}\n"
                    f"— see {self.log_file}",
                )
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Graceful stop (SIGTERM: controlled shutdown), SIGKILL after ``timeout``."""
        return self.process.stop(timeout)

    def kill(self) -> bool:
        """SIGKILL, as a crash would; returns once the process is gone."""
        return self.process.kill()

    def wipe(self) -> None:
        """Delete the node's data (topics, metadata); it must be stopped."""
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the broker log (or the JVM output when the log is empty)."""
        for path in (self.log_file, self.process.output):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return "\n".join(text.splitlines()[-lines:])
        return "(no log output)"
