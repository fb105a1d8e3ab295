"""`headrace dev` against real JVMs: download, start, idempotent up, status, down, errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from support import wait_for

from headrace.dev import KafkaCluster, free_port_block, is_free
from headrace.dev.jars import MARKER
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings
from headrace.topology import TOPICS

pytestmark = pytest.mark.integration


_WEB_PORTS = free_port_block(10)  # the services use base+0..+6
_API_PORT = _WEB_PORTS + 8


def headrace(
    *args: str, home: Path, path: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process with its own HEADRACE_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env.update({"HEADRACE_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"})
    # `dev up` starts the services too: on ports of their own, not a running dev stack's.
    env.update({"HEADRACE_DEV_WEB_PORT": str(_WEB_PORTS), "HEADRACE_API_PORT": str(_API_PORT)})
    if path is not None:
        env["PATH"] = path
        env.pop("JAVA_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "headrace.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def only_java_on_path(tmp_path: Path) -> str:
    """A PATH holding java and nothing else (no mvn)."""
    java = shutil.which("java")
    assert java, "these tests need java"
    bin_dir = tmp_path / "java-only-bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(Path(java).resolve())
    return str(bin_dir)


def pids_of(home: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((home / "dev" / "kafka").glob("node-*/broker.pid"))]


def test_dev_up_downloads_starts_creates_topics_and_down_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port_block(2)
    try:
        up = headrace("dev", "up", "--port", str(port), home=home)
        assert up.returncode == 0, up.stderr
        assert f"bootstrap: 127.0.0.1:{port}" in up.stdout
        assert f"topics: {len(TOPICS)} created, 0 found" in up.stdout
        marker = home / "kafka-4.1.1" / MARKER
        assert json.loads(marker.read_text())["jars"] > 50
        first_download = marker.stat().st_mtime_ns
        [pid] = pids_of(home)

        # Another client sees the broker and every topic.
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert len(meta.brokers) == 1
        assert {f"headrace.{t.suffix}" for t in TOPICS} <= set(meta.topics)

        again = headrace("dev", "kafka", "up", "--port", str(port), home=home)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert pids_of(home) == [pid]
        assert marker.stat().st_mtime_ns == first_download

        status = headrace("dev", "kafka", "status", home=home)
        assert status.returncode == 0, status.stdout + status.stderr
        assert str(pid) in status.stdout and str(port) in status.stdout

        down = headrace("dev", "down", home=home)
        assert down.returncode == 0, down.stderr
        assert "stopped 1 node(s)" in down.stdout
        assert not Path(f"/proc/{pid}").exists() or not pids_of(home)
        assert is_free(port) and is_free(port + 1)
        stopped = headrace("dev", "kafka", "status", home=home)
        assert stopped.returncode == 1

        # Restart without mvn on PATH: the cached jars and the data are reused.
        restart = headrace("dev", "kafka", "up", home=home, path=only_java_on_path(tmp_path))
        assert restart.returncode == 0, restart.stderr
        assert "cached" in restart.stderr
        assert marker.stat().st_mtime_ns == first_download
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert {f"headrace.{t.suffix}" for t in TOPICS} <= set(meta.topics)
    finally:
        headrace("dev", "kafka", "down", home=home)
    assert not pids_of(home)


def test_up_on_a_taken_port_names_the_port_and_its_owner(tmp_path: Path) -> None:
    port = free_port_block(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = headrace("dev", "kafka", "up", "--port", str(port), home=tmp_path)
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "HR-CFG-003" in text
    assert f"port {port}" in text
    assert f"pid {os.getpid()}" in text
    assert "Traceback" not in result.stderr


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = headrace(
        "dev", "kafka", "up", "--port", str(free_port_block(2)), home=tmp_path, path=str(empty)
    )
    assert result.returncode == 1
    assert "HR-CFG-002" in result.stderr and "`java`" in result.stderr


def test_missing_maven_on_a_cold_cache_is_a_clear_error(tmp_path: Path) -> None:
    result = headrace(
        "dev",
        "kafka",
        "up",
        "--port",
        str(free_port_block(2)),
        home=tmp_path / "cold",
        path=only_java_on_path(tmp_path),
    )
    assert result.returncode == 1
    assert "HR-CFG-002" in result.stderr and "`mvn`" in result.stderr
    assert not (tmp_path / "cold" / "kafka-4.1.1" / MARKER).exists()


def test_failed_download_shows_maven_output_and_leaves_no_marker(tmp_path: Path) -> None:
    env_version = "0.0.0-no-such-kafka"
    result = subprocess.run(
        [sys.executable, "-m", "headrace.cli.main", "dev", "kafka", "up"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")},
            "HEADRACE_HOME": str(tmp_path),
            "HEADRACE_KAFKA_VERSION": env_version,
            "HEADRACE_KAFKA_PORT": str(free_port_block(2)),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "HR-CFG-004" in result.stderr
    assert env_version in result.stderr  # mvn's own words about the missing artifact
    assert not (tmp_path / f"kafka-{env_version}" / MARKER).exists()


def test_three_node_cluster_keeps_accepting_acks_all_writes_with_one_node_killed(
    kafka_cluster: Callable[[int], KafkaCluster],
) -> None:
    cluster = kafka_cluster(3)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic("replicated", 3)])["replicated"].result()

    def isr_sizes() -> list[int]:
        parts = admin.list_topics("replicated", timeout=5).topics["replicated"].partitions
        return [len(p.isrs) for p in parts.values()]

    assert wait_for(lambda: isr_sizes() == [3, 3, 3], 30, "full ISR on a fresh topic")
    settings = Settings(bootstrap=cluster.bootstrap)
    producer = make_producer(settings, message_timeout_ms=60000)

    cluster.kill_node(2)
    assert not cluster.node(2).alive()
    msg = produce_sync(producer, "replicated", b"while node 2 is down", key=b"k")
    assert msg.error() is None

    cluster.start_node(2)
    assert wait_for(lambda: isr_sizes() == [3, 3, 3], 60, "node 2 back in every ISR")

    cluster.kill_node(1)
    cluster.kill_node(3)
    # Two of three nodes gone: min.insync.replicas=2 cannot be met, so acks=all fails.
    with pytest.raises(HeadraceError) as failed:
        produce_sync(
            make_producer(settings, message_timeout_ms=5000), "replicated", b"x", timeout=15
        )
    assert failed.value.code in (ErrorCode.KAFKA_PRODUCE_FAILED, ErrorCode.KAFKA_TIMEOUT)


def test_status_reports_no_cluster_in_an_empty_home(tmp_path: Path) -> None:
    result = headrace("dev", "kafka", "status", home=tmp_path)
    assert result.returncode == 1
    assert "no local Kafka" in result.stdout


def test_cluster_down_is_a_no_op_when_nothing_runs(tmp_path: Path) -> None:
    assert KafkaCluster.open(tmp_path, tmp_path) is None
    result = headrace("dev", "kafka", "down", home=tmp_path)
    assert result.returncode == 0
    assert "no local Kafka" in result.stdout
