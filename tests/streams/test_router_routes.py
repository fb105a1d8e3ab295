"""Routing without a broker: CloudEvents both ways, determinism, and no input crashes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_kit import AUDIT, ORDER

from headrace.core.codec import decode_command
from headrace.core.dsl.load import load_definition
from headrace.core.partitioner import positive_hash
from headrace.definitions import Deployed, digest_of
from headrace.settings import Settings
from headrace.streams.cloudevents_in import (
    SIGNAL_TYPE,
    START_TYPE,
    Rejected,
    encode_event,
    parse,
    start_run_id,
)
from headrace.streams.routes import IngressRecord, Outcome, Routes

SETTINGS = Settings(bootstrap="unused:1", topic_prefix="u.")


class MemoryCatalog:
    """Deployed definitions held in memory (the real catalog is tested against Kafka)."""

    def __init__(self, *texts: str) -> None:
        self.items: dict[tuple[str, int], Deployed] = {}
        for text in texts:
            d = load_definition(text)
            self.items[(d.type, d.version)] = Deployed(d, digest_of(d), text, 1, "test")
        self.catch_ups = 0

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None:
        if version is None:
            versions = [v for t, v in self.items if t == workflow_type]
            if not versions:
                return None
            version = max(versions)
        return self.items.get((workflow_type, version))

    def all(self) -> list[Deployed]:
        return list(self.items.values())

    def wait_current(self, timeout: float = 30.0) -> None:
        self.catch_ups += 1

    def on_deployed(self, listener: Callable[[Deployed], None]) -> None:
        pass


def record(
    value: bytes | None, headers: Any, *, key: bytes | None = None, offset: int = 0
) -> IngressRecord:
    return IngressRecord("u.ingress", 2, offset, key, value, list(headers), 1_700_000_000_000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-:.", min_size=1, max_size=30)
tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(data=json_values, source=names, event_id=names, tenant=tenants, structured=st.booleans())
def test_encoded_events_parse_back_in_both_modes(
    data: Any, source: str, event_id: str, tenant: str, structured: bool
) -> None:
    m = encode_event(
        "com.example.x", source, data, event_id=event_id, tenant=tenant, structured=structured
    )
    ev = parse(m.value, m.headers)
    assert (ev.id, ev.source, ev.type, ev.tenant) == (event_id, source, "com.example.x", tenant)
    assert ev.data == data
    assert ev.mode == ("structured" if structured else "binary")
    assert ev.as_json()["data"] == data


headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_specversion",
                "ce_time",
                "ce_tenant",
                "content-type",
                "ce_Bad-Name",
                "x-other",
            ]
        ),
        st.none() | st.binary(max_size=12) | st.sampled_from([b"1.0", START_TYPE.encode(), b"/s"]),
    ),
    max_size=7,
)
values = st.none() | st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode())


@settings(max_examples=300)
@given(value=values, hdrs=headers)
def test_parse_never_raises_anything_but_rejected(value: bytes | None, hdrs: Any) -> None:
    try:
        parse(value, hdrs)
    except Rejected as exc:
        assert exc.code.code.startswith("HR-") and exc.message


@settings(max_examples=300)
@given(value=values, hdrs=headers, key=st.none() | st.binary(max_size=8))
def test_routing_never_raises_and_dead_letters_keep_the_record(
    value: bytes | None, hdrs: Any, key: bytes | None
) -> None:
    routes = Routes(SETTINGS, MemoryCatalog(ORDER, AUDIT))
    rec = record(value, hdrs, key=key, offset=7)
    routed = routes.route(rec)
    if routed.outcome is Outcome.DEAD_LETTERED:
        (m,) = routed.messages
        assert (m.topic, m.key, m.value) == ("u.dlq", key, value)
        got = dict(m.headers or [])
        assert got["headrace-source-offset"] == b"7" and got["headrace-source-partition"] == b"2"
        assert got["headrace-error-code"] != b"HR-INT-001", got["headrace-error"]  # no bug path


def test_the_same_record_routes_to_the_same_bytes() -> None:
    routes = Routes(SETTINGS, MemoryCatalog(ORDER))
    m = encode_event(
        START_TYPE, "/crm", {"workflow": "order", "input": {"order_id": "a"}}, event_id="e1"
    )
    first = routes.route(record(m.value, m.headers, offset=1))
    again = routes.route(record(m.value, m.headers, offset=99))
    assert first.outcome is Outcome.STARTED
    assert first.messages == again.messages
    command = decode_command(first.messages[0].value or b"")
    assert command.run_id == start_run_id("/crm", "e1")
    assert command.time == 1_700_000_000_000  # the ingress record's timestamp


def test_a_miss_catches_the_catalog_up_once_per_batch() -> None:
    catalog = MemoryCatalog(ORDER)
    routes = Routes(SETTINGS, catalog)
    m = encode_event(START_TYPE, "/crm", {"workflow": "nope", "input": {}})
    routes.begin_batch()
    for _ in range(3):
        assert routes.route(record(m.value, m.headers)).outcome is Outcome.DEAD_LETTERED
    assert catalog.catch_ups == 1
    routes.begin_batch()
    routes.route(record(m.value, m.headers))
    assert catalog.catch_ups == 2


def test_a_known_workflow_never_waits_for_the_catalog() -> None:
    catalog = MemoryCatalog(ORDER)
    routes = Routes(SETTINGS, catalog)
    m = encode_event(START_TYPE, "/crm", {"workflow": "order", "input": {"order_id": "a"}})
    routes.begin_batch()
    assert routes.route(record(m.value, m.headers)).outcome is Outcome.STARTED
    assert catalog.catch_ups == 0


def test_a_failing_trigger_expression_is_dead_lettered_while_other_triggers_start() -> None:
    broken = ORDER.replace("run_id: '\"order-\" + .data.id'", "run_id: .data.id.nested")
    routes = Routes(SETTINGS, MemoryCatalog(broken, AUDIT))
    m = encode_event("com.example.order.placed", "/shop", {"id": "A", "total": 500})
    routed = routes.route(record(m.value, m.headers))
    assert routed.outcome is Outcome.TRIGGERED
    topics = sorted(o.topic for o in routed.messages)
    assert topics == ["u.commands", "u.dlq"]
    dead = next(o for o in routed.messages if o.topic == "u.dlq")
    reason = dict(dead.headers or [])["headrace-error"].decode()
    assert reason.startswith("trigger 0 of order@1:")


def test_only_the_latest_version_of_a_type_triggers() -> None:
    v2 = ORDER.replace("version: 1", "version: 2").replace(
        "filter: .data.total > 100", "filter: .data.total > 1000"
    )
    routes = Routes(SETTINGS, MemoryCatalog(ORDER, v2))
    m = encode_event("com.example.order.placed", "/shop", {"id": "A", "total": 500})
    assert routes.route(record(m.value, m.headers)).outcome is Outcome.IGNORED
    m = encode_event("com.example.order.placed", "/shop", {"id": "B", "total": 5000})
    (out,) = routes.route(record(m.value, m.headers)).messages
    assert decode_command(out.value or b"").payload["version"] == 2


def test_signal_message_shape() -> None:
    routes = Routes(SETTINGS, MemoryCatalog())
    m = encode_event(
        SIGNAL_TYPE,
        "/ops",
        {"name": "paid", "correlation": "inv-1", "data": [1]},
        event_id="s",
        tenant="acme",
        extensions={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    (out,) = routes.route(record(m.value, m.headers)).messages
    # keyed by the tenant-scoped address, on murmur2(key) % P like a Java producer
    assert (out.topic, out.key) == ("u.signals", "acme/inv-1")
    assert out.partition == positive_hash("acme/inv-1") % SETTINGS.partitions
    assert json.loads(out.value or b"") == {
        "op": "signal",
        "signal_id": out_signal_id(out),
        "signal": "paid",
        "tenant": "acme",
        "correlation": "inv-1",
        "data": [1],
        "time": 1_700_000_000_000,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


def out_signal_id(out: Any) -> str:
    sid = json.loads(out.value)["signal_id"]
    assert sid.startswith("ce:")
    return str(sid)
