"""The ingress router against a real broker: starts, duplicates, signals, triggers, commits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from ingress_kit import (
    AUDIT,
    ORDER,
    create_topics,
    delete_topics,
    deploy_yaml,
    produce_event,
    read_topic,
    running_router,
    topic_size,
)
from support import wait_for

from headrace.core.codec import decode_command
from headrace.core.envelope import CommandType
from headrace.settings import Settings
from headrace.streams.cloudevents_in import (
    SIGNAL_TYPE,
    START_TYPE,
    encode_event,
    start_run_id,
    trigger_run_id,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(settings: Settings) -> Iterator[Settings]:
    create_topics(settings)
    yield settings
    delete_topics(settings)


def test_binary_start_becomes_a_pinned_start_command_on_the_runs_partition(
    topics: Settings,
) -> None:
    deploy_yaml(topics, ORDER)
    event = encode_event(
        START_TYPE, "/crm", {"workflow": "order", "input": {"order_id": "o-1"}}, tenant="acme"
    )
    with running_router(topics):
        produce_event(topics, event)
        (got,) = read_topic(topics, topics.topics.commands, 1)
    event_id = dict(event.headers)["ce_id"].decode()
    run_id = start_run_id("/crm", event_id)
    command = decode_command(got.value or b"")
    assert command.type is CommandType.StartRun
    assert (command.tenant, command.run_id) == ("acme", run_id)
    assert command.payload == {
        "workflow": "order",
        "version": 1,
        "input": {"order_id": "o-1"},
        "parent": None,
    }
    assert got.key == f"acme/{run_id}".encode()
    assert got.partition == topics.routing.partition("acme", run_id)
    assert command.command_id.startswith("ce:")


def test_structured_start_with_run_id_and_version(topics: Settings) -> None:
    order_v2 = ORDER.replace("version: 1", "version: 2")
    deploy_yaml(topics, ORDER, order_v2)
    data = {"workflow": "order", "version": 1, "input": {"order_id": "o-2"}, "run_id": "r-42"}
    event = encode_event(START_TYPE, "/crm", data, structured=True)
    with running_router(topics):
        produce_event(topics, event)
        (got,) = read_topic(topics, topics.topics.commands, 1)
    command = decode_command(got.value or b"")
    assert (command.tenant, command.run_id) == ("default", "r-42")
    assert command.payload["version"] == 1
    assert got.partition == topics.routing.partition("default", "r-42")


def test_a_duplicate_cloudevent_yields_the_same_command(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    data = {"workflow": "order", "input": {"order_id": "o-3"}}
    first = encode_event(START_TYPE, "/crm", data, event_id="evt-7", tenant="acme")
    again = encode_event(START_TYPE, "/crm", data, event_id="evt-7", tenant="acme", structured=True)
    other = encode_event(START_TYPE, "/crm", data, event_id="evt-8", tenant="acme")
    with running_router(topics):
        for e in (first, again, other):
            produce_event(topics, e)
        got = read_topic(topics, topics.topics.commands, 3)
    # The three events may be routed in any order (ingress records are spread
    # over partitions), so match the commands by run rather than by offset.
    commands = [decode_command(r.value or b"") for r in got]
    dup = [c for c in commands if c.run_id == start_run_id("/crm", "evt-7")]
    (c,) = [c for c in commands if c.run_id != start_run_id("/crm", "evt-7")]
    assert len(dup) == 2
    a, b = dup
    assert (a.command_id, a.run_id, a.payload) == (b.command_id, b.run_id, b.payload)
    assert c.command_id != a.command_id


def test_signals_by_run_id_and_by_correlation(topics: Settings) -> None:
    by_run = encode_event(
        SIGNAL_TYPE,
        "/ops",
        {"name": "approve", "run_id": "r-1", "data": {"ok": True}},
        event_id="s1",
    )
    by_key = encode_event(
        SIGNAL_TYPE,
        "/ops",
        {"name": "paid", "correlation": "invoice-9", "data": 12},
        event_id="s2",
        tenant="acme",
    )
    with running_router(topics):
        produce_event(topics, by_run)
        produce_event(topics, by_key)
        got = read_topic(topics, topics.topics.signals, 2)
    bodies = {r.key: (json.loads(r.value or b""), r.header("headrace-op")) for r in got}
    run_body, op = bodies[b"default/r-1"]
    assert op == "signal"
    assert run_body["op"] == "signal" and run_body["signal"] == "approve"
    assert (run_body["tenant"], run_body["run_id"], run_body["data"]) == (
        "default",
        "r-1",
        {"ok": True},
    )
    assert "correlation" not in run_body
    key_body, _ = bodies[b"acme/invoice-9"]
    assert (key_body["tenant"], key_body["correlation"], key_body["data"]) == (
        "acme",
        "invoice-9",
        12,
    )
    assert key_body["signal_id"] != run_body["signal_id"]


def test_triggers_start_the_latest_matching_definitions(topics: Settings) -> None:
    deploy_yaml(topics, ORDER, AUDIT)
    big = encode_event(
        "com.example.order.placed", "/shop", {"id": "A1", "total": 150}, event_id="e-big"
    )
    small = encode_event(
        "com.example.order.placed", "/shop", {"id": "A2", "total": 5}, event_id="e-small"
    )
    elsewhere = encode_event(
        "com.example.order.placed", "/pos", {"id": "A3", "total": 500}, event_id="e-pos"
    )
    with running_router(topics):
        for e in (big, small, elsewhere):
            produce_event(topics, e)
        got = read_topic(topics, topics.topics.commands, 4)
        # nothing else is coming: every event has been routed once the last one is
        wait_for(lambda: topic_size(topics, topics.topics.commands) == 4, 10, "4 commands")
    commands = [decode_command(r.value or b"") for r in got]
    by_run = {c.run_id: c for c in commands}
    order = by_run["order-A1"]
    assert order.payload["workflow"] == "order"
    assert order.payload["input"] == {"order_id": "A1", "total": 150}
    audits = [c for c in commands if c.payload["workflow"] == "audit"]
    assert {c.run_id for c in audits} == {
        trigger_run_id("/shop", "e-big", "audit"),
        trigger_run_id("/shop", "e-small", "audit"),
        trigger_run_id("/pos", "e-pos", "audit"),
    }
    assert {json.dumps(c.payload["input"]) for c in audits} == {
        json.dumps({"id": "A1", "total": 150}),
        json.dumps({"id": "A2", "total": 5}),
        json.dumps({"id": "A3", "total": 500}),
    }
    assert topic_size(topics, topics.topics.dlq) == 0


def test_committed_offsets_are_not_routed_again(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    data = {"workflow": "order", "input": {"order_id": "o"}}
    with running_router(topics):
        for i in range(20):
            produce_event(topics, encode_event(START_TYPE, "/crm", data, event_id=f"a{i}"))
        read_topic(topics, topics.topics.commands, 20)
    with running_router(topics):
        produce_event(topics, encode_event(START_TYPE, "/crm", data, event_id="b"))
        read_topic(topics, topics.topics.commands, 21)
        assert topic_size(topics, topics.topics.commands) == 21


def test_routers_share_ingress_and_lose_nothing_across_rebalances(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    data = {"workflow": "order", "input": {"order_id": "o"}}

    def send(tag: str) -> None:
        for i in range(100):
            produce_event(topics, encode_event(START_TYPE, "/crm", data, event_id=f"{tag}{i}"))

    def run_ids() -> set[str]:
        got = read_topic(topics, topics.topics.commands, topic_size(topics, topics.topics.commands))
        return {decode_command(r.value or b"").run_id for r in got}

    expected = {start_run_id("/crm", f"{t}{i}") for t in "abc" for i in range(100)}
    with running_router(topics, client_id="router-a"):
        send("a")
        with running_router(topics, client_id="router-b"):
            send("b")
        send("c")  # router b has left: a takes every partition back
        wait_for(lambda: run_ids() >= expected, 60, "300 starts routed")
    assert run_ids() == expected  # duplicates may occur, but nothing else and nothing lost
