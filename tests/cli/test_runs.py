"""``headrace start`` and ``headrace history`` against a real broker (and a real router)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingress_kit import (
    ORDER,
    create_topics,
    delete_topics,
    deploy_yaml,
    produce_raw_events,
    produce_sealed,
    read_topic,
    run_events,
    running_router,
)
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.chain import seal
from headrace.core.codec import decode_command
from headrace.core.envelope import EventType
from headrace.settings import Settings

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def topics(settings: Settings) -> Iterator[Settings]:
    create_topics(settings)
    yield settings
    delete_topics(settings)


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"HEADRACE_BOOTSTRAP": settings.bootstrap, "HEADRACE_TOPIC_PREFIX": settings.topic_prefix}
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# -- start -------------------------------------------------------------------


def test_start_sends_a_cloudevent_the_router_turns_into_the_printed_run(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    with running_router(topics):
        code, out, err = cli(
            topics, "start", "order", "--input", '{"order_id": "o-9"}', "-t", "acme"
        )
        assert code == 0, err
        (got,) = read_topic(topics, topics.topics.commands, 1)
    m = re.search(r"run (\S+) \(tenant acme, partition (\d+), event (\S+)\)", out)
    assert m, out
    command = decode_command(got.value or b"")
    assert (command.tenant, command.run_id) == ("acme", m.group(1))
    assert got.partition == int(m.group(2))
    assert command.payload["input"] == {"order_id": "o-9"}
    (sent,) = read_topic(topics, topics.topics.ingress, 1)
    assert sent.header("ce_id") == m.group(3)
    assert sent.header("ce_type") == "io.headrace.run.start"
    assert sent.header("ce_tenant") == "acme"  # binary mode: attributes in headers


def test_start_with_an_input_file_a_run_id_and_a_version(topics: Settings, tmp_path: Path) -> None:
    deploy_yaml(topics, ORDER, ORDER.replace("version: 1", "version: 2"))
    (tmp_path / "in.json").write_text('{"order_id": "from-file"}')
    with running_router(topics):
        code, out, _ = cli(
            topics,
            "start",
            "order",
            "-i",
            f"@{tmp_path / 'in.json'}",
            "--run-id",
            "r-7",
            "--version",
            "1",
            "-q",
        )
        assert (code, out) == (0, "r-7\n")
        (got,) = read_topic(topics, topics.topics.commands, 1)
    command = decode_command(got.value or b"")
    assert command.run_id == "r-7" and command.payload["version"] == 1
    assert command.payload["input"] == {"order_id": "from-file"}


def test_start_checks_workflow_and_input_before_sending(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    code, _, err = cli(topics, "start", "nope")
    assert code == 1 and "HR-DEF-002" in err
    code, _, err = cli(topics, "start", "order", "--input", '{"total": 1}')
    assert code == 1 and "HR-RUN-001" in err and "order_id" in err
    code, _, err = cli(topics, "start", "order", "--input", "{oops")
    assert code == 2 and "not JSON" in err
    code, _, _ = cli(topics, "start", "nope", "--no-check")
    assert code == 0
    assert len(read_topic(topics, topics.topics.ingress, 1)) == 1


def test_start_wait_follows_the_run_to_its_outcome(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    seen = threading.Event()

    def orchestrate() -> None:
        # Plays the router and orchestrator: reads the start event, writes the run's log.
        (sent,) = read_topic(topics, topics.topics.ingress, 1, timeout=60)
        tenant, run_id = (sent.key or b"").decode().split("/", 1)
        produce_sealed(topics, run_events(tenant, run_id), duplicate=3)
        seen.set()

    helper = threading.Thread(target=orchestrate, daemon=True)
    helper.start()
    code, out, err = cli(
        topics, "start", "order", "-i", '{"order_id": "w"}', "--wait", "--timeout", "60s"
    )
    helper.join(10)
    assert seen.is_set()
    assert code == 0, err
    assert 'completed {"ok": true}' in out
    assert err.count("TaskCompleted") == 2  # the redelivered seq 3 is shown once
    assert "RunCompleted" in err


def test_start_wait_exits_1_when_the_run_failed(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    produce_sealed(topics, run_events("default", "doomed", EventType.RunFailed))
    code, out, _ = cli(
        topics, "start", "order", "-i", '{"order_id": "w"}', "--run-id", "doomed", "--wait"
    )
    assert code == 1
    assert "failed" in out and "card-declined" in out


def test_start_wait_gives_up_after_its_timeout(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    code, _, err = cli(
        topics, "start", "order", "-i", '{"order_id": "w"}', "--wait", "--timeout", "1s"
    )
    assert code == 124 and "has not ended" in err


# -- history ---------------------------------------------------------------


def test_history_prints_a_timeline_and_verifies_the_chain(topics: Settings) -> None:
    produce_sealed(topics, run_events("acme", "other", steps=1))  # shares the partition
    produce_sealed(topics, run_events("acme", "r-1"), duplicate=4)
    code, out, err = cli(topics, "history", "r-1", "--tenant", "acme", "--verify")
    assert code == 0, err
    lines = [line for line in out.splitlines() if re.match(r"\s*\d+\s+\d{4}-", line)]
    assert [line.split()[0] for line in lines] == [str(i) for i in range(1, 11)]
    assert "RunStarted" in lines[0] and "TaskScheduled" in lines[2] and "queue=payments" in lines[2]
    assert "RunCompleted" in lines[-1] and '{"ok":true}' in lines[-1]
    assert "1 byte-identical redelivery" in out
    assert "chain verified: 10 events" in out and "1 duplicate(s) collapsed" in out


def test_history_json(topics: Settings) -> None:
    produce_sealed(topics, run_events("default", "r-2", steps=1))
    code, out, _ = cli(topics, "history", "r-2", "--format", "json", "--verify")
    assert code == 0
    doc = json.loads(out)
    assert [e["seq"] for e in doc["events"]] == [1, 2, 3, 4, 5, 6]
    assert doc["events"][0]["type"] == "RunStarted"
    assert doc["events"][0]["time"] == "2025-11-24T16:00:00.001Z"
    assert doc["verify"]["ok"] is True and doc["duplicates"] == 0


def test_history_reports_a_tampered_event_with_its_seq(topics: Settings) -> None:
    sealed = [raw for _, raw in seal(run_events("acme", "r-3"))]
    i = sealed[2].index(b"payments")
    sealed[2] = sealed[2][:i] + b"PAYMENTS" + sealed[2][i + 8 :]
    produce_raw_events(topics, "acme", "r-3", sealed)
    code, out, _ = cli(topics, "history", "r-3", "-t", "acme", "--verify")
    assert code == 1
    assert "chain BROKEN at seq 3: tampered" in out
    assert "2 events verified before it" in out
    code, _, _ = cli(topics, "history", "r-3", "-t", "acme")
    assert code == 0  # without --verify the timeline is shown as it is


def test_history_of_an_unknown_run(topics: Settings) -> None:
    code, _, err = cli(topics, "history", "ghost")
    assert code == 1 and "HR-RUN-002" in err and "--tenant" in err


def test_history_follow_prints_events_as_they_come_until_the_run_ends(topics: Settings) -> None:
    events = run_events("default", "r-4")
    produce_sealed(topics, events[:3])
    sealed = [raw for _, raw in seal(events)]
    threading.Timer(1.0, lambda: produce_raw_events(topics, "default", "r-4", sealed[3:])).start()
    code, out, _ = cli(topics, "history", "r-4", "--follow", "--verify")
    assert code == 0
    kinds = [line.split()[2] for line in out.splitlines() if re.match(r"\s*\d+\s+\d{4}-", line)]
    assert kinds == [e.type.value for e in events]
    assert "chain verified: 10 events" in out
