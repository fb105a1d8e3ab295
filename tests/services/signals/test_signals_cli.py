"""``headrace signal``: the messages it writes to ``signals``, and the mistakes it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from headrace.core.outbox import signal_partition
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition
from headrace.topic_admin import ensure_topics

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HEADRACE_BOOTSTRAP": settings.bootstrap,
        "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
        "HEADRACE_PARTITIONS": str(settings.partitions),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "headrace", "signal", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def signals_on_topic(settings: Settings) -> list[tuple[int, str, dict[str, Any], dict[str, bytes]]]:
    out = []
    for p in range(settings.partitions):
        for rec in read_partition(settings.bootstrap, settings.topics.signals, p, 0):
            headers = dict(rec.headers or [])
            out.append((p, (rec.key or b"").decode(), json.loads(rec.value or b"{}"), headers))
    return out


def test_the_cli_writes_what_the_router_writes_keyed_by_address(settings: Settings) -> None:
    ensure_topics(settings)
    run = cli(settings, "r-17", "approve", "--tenant", "acme", "--data", '{"ok": true}', "-q")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.strip()
    assert sid.startswith("cli:")
    assert (
        cli(settings, "--correlation", "inv-9", "paid", "-d", "42", "--id", "pay-1").returncode == 0
    )
    bc = cli(settings, "--broadcast", "order", "recall", "--filter", ".total > 100", "-d", "{}")
    assert bc.returncode == 0, bc.stderr
    assert "every live order run" in bc.stdout
    got = {key: (p, body, headers) for p, key, body, headers in signals_on_topic(settings)}
    assert set(got) == {"acme/r-17", "default/inv-9", "broadcast/order"}
    for key, (p, body, headers) in got.items():
        assert p == signal_partition(key, settings.partitions)
        assert headers["headrace-op"] == body["op"].encode()
    _, body, _ = got["acme/r-17"]
    assert body == {
        "op": "signal",
        "signal_id": sid,
        "signal": "approve",
        "tenant": "acme",
        "run_id": "r-17",
        "data": {"ok": True},
        "time": body["time"],
    }
    _, body, _ = got["default/inv-9"]
    assert (body["signal_id"], body["correlation"], body["data"]) == ("pay-1", "inv-9", 42)
    _, body, _ = got["broadcast/order"]
    assert (body["op"], body["type"], body["signal"], body["filter"]) == (
        "broadcast",
        "order",
        "recall",
        ".total > 100",
    )
    assert "tenant" not in body


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["only-a-name"], "RUN NAME"),
        (["--correlation", "k", "run", "name"], "give NAME with --correlation"),
        (["--correlation", "k", "--broadcast", "t", "name"], "at most one"),
        (["r1", "go", "--filter", ".x"], "--filter only applies"),
        (["r1", "go", "--data", "{nope"], "--data is not JSON"),
        (["--broadcast", "t", "go", "--filter", "repeat(1)"], "HR-DEF-004"),
    ],
)
def test_the_cli_refuses_what_it_cannot_send(
    settings: Settings, args: list[str], says: str
) -> None:
    run = cli(settings, *args)
    assert run.returncode != 0
    assert says in run.stdout + run.stderr
