"""The ``signals`` wire: what the orchestrator's outbox writes for a wait, keys, parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.core.decider import State, apply
from headrace.core.decider.effects import effects
from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, EventType
from headrace.core.outbox import (
    broadcast_body,
    messages_for,
    signal_body,
    signal_key,
    signal_message,
    signal_partition,
)
from headrace.core.partitioner import positive_hash
from headrace.core.simulate import Script, Simulation
from headrace.services.signals.messages import BroadcastOp, SignalOp, WaitOp, parse_op
from headrace.settings import Settings

SETTINGS = Settings(topic_prefix="u.", partitions=12)
ROUTING = SETTINGS.routing

DEFN = load_definition(
    """
type: t
version: 1
steps:
  - {name: keyed, kind: wait_signal, signal: go, correlation: .key, timeout: 1h, on_timeout: own}
  - {name: own, kind: wait_signal, signal: go}
""",
    "t.yaml",
)


def wire(events: list) -> list[tuple[str, dict]]:
    return [
        (str(m.key), json.loads(m.value or b""))
        for ev in events
        for m in messages_for(effects(ev), ROUTING)
        if m.topic == "u.signals"
    ]


def test_a_wait_and_its_end_reach_the_same_addresses_on_the_same_partitions() -> None:
    script = Script.from_dict({"signals": [{"signal": "go", "at": "2h"}]})
    sim = Simulation(DEFN, {"key": "order-5"}, script, tenant="default", run_id="r1").run()
    out = wire(sim.events)
    keyed_await = [(k, b) for k, b in out if b["op"] == "await" and b["correlation"] == "order-5"]
    assert [(k, b["index"]) for k, b in keyed_await] == [
        ("default/order-5", "correlation"),
        ("default/r1", "run"),
    ]
    wait_id = keyed_await[0][1]["wait_id"]
    cancels = [(k, b) for k, b in out if b["op"] == "cancel_wait" and b["wait_id"] == wait_id]
    assert [(k, b["index"], b["reason"]) for k, b in cancels] == [
        ("default/order-5", "correlation", "timed_out"),
        ("default/r1", "run", "timed_out"),
    ]
    # the second wait waits on the run id: one address, the run's
    own = [(k, b) for k, b in out if b["op"] == "await" and b["wait_id"] != wait_id]
    assert [(k, b["index"]) for k, b in own] == [("default/r1", "correlation")]
    for k, b in out:
        parsed = parse_op(json.dumps(b).encode())
        assert isinstance(parsed, WaitOp) and parsed.address == k


def test_a_received_wait_names_the_signal_it_took() -> None:
    state = State.empty()
    start = Command("c1", "acme", "r1", CommandType.StartRun, 1, {"input": {"key": "k"}})
    (wait_id,) = [
        e.payload["wait_id"] for e in apply(state, start, DEFN) if e.type is EventType.SignalAwaited
    ]
    deliver = Command(
        "c2",
        "acme",
        "r1",
        CommandType.DeliverSignal,
        2,
        {"signal": "go", "data": 1, "wait_id": wait_id, "signal_id": "sig-1"},
    )
    received = next(e for e in apply(state, deliver, DEFN) if e.type is EventType.SignalReceived)
    assert (received.payload["signal_id"], received.payload["correlation"]) == ("sig-1", "k")
    cancels = wire([received])
    assert [(k, b["index"], b["reason"], b["signal_id"]) for k, b in cancels] == [
        ("acme/k", "correlation", "received", "sig-1"),
        ("acme/r1", "run", "received", "sig-1"),
    ]


def test_signal_and_broadcast_bodies_round_trip_through_the_parser() -> None:
    body = signal_body(signal_id="s", signal="go", tenant="acme", data=[1], time=5, run_id="r/1")
    m = signal_message(body, ROUTING)
    assert (m.key, m.partition) == ("acme/r/1", positive_hash("acme/r/1") % 12)
    assert dict(m.headers or [])["headrace-op"] == b"signal"
    op = parse_op(m.value)
    assert op == SignalOp("s", "go", "acme", [1], 5, run_id="r/1")
    b = broadcast_body(
        signal_id="b", signal="go", workflow_type="order", data=None, time=1, filter_expr=".x"
    )
    assert signal_key(b) == "broadcast/order"
    assert parse_op(signal_message(b, ROUTING).value) == BroadcastOp(
        "b", "go", "order", None, 1, filter=".x"
    )
    with pytest.raises(ValueError):
        signal_body(signal_id="s", signal="go", tenant="a", data=0, time=0)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "tombstone"),
        (b"[1]", "JSON object"),
        (b"{nope", "not JSON"),
        (b'{"op": "poke"}', "`op` is 'poke'"),
        (
            b'{"op": "signal", "signal_id": "s", "signal": "go", "tenant": "a", "time": 1}',
            "correlation",
        ),
        (
            b'{"op": "signal", "signal_id": "s", "signal": "go", "tenant": "a", "time": 1,'
            b' "run_id": "r", "correlation": "k"}',
            "exactly one",
        ),
        (
            b'{"op": "cancel_wait", "wait_id": "w", "tenant": "a", "run_id": "r",'
            b' "correlation": "k", "reason": "bored"}',
            "`reason`",
        ),
        (
            b'{"op": "await", "wait_id": "w", "tenant": "a", "run_id": "r", "signal": "go"}',
            "correlation",
        ),
        # valid JSON to Python, and once crashed the service instead of reaching the DLQ
        (
            b'{"op": "signal", "signal_id": "s", "signal": "go", "tenant": "a",'
            b' "correlation": "k", "time": Infinity}',
            "finite",
        ),
        (
            b'{"op": "signal", "signal_id": "s", "signal": "go", "tenant": "a",'
            b' "correlation": "k", "time": NaN}',
            "finite",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"op": "signal", "signal_id": "s", "signal": "go", "tenant": "\\ud800",'
            b' "correlation": "k", "time": 1}',
            "lone surrogate",
        ),
    ],
)
def test_the_parser_says_what_is_wrong(value: bytes | None, says: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_op(value)
    assert says in str(err.value)


@given(st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_the_partition_of_an_address_is_the_java_default(key: str, partitions: int) -> None:
    assert signal_partition(key, partitions) == positive_hash(key) % partitions
