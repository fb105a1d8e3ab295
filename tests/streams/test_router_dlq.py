"""What the router cannot act on goes to the DLQ, as it came, with the reason — and it moves on."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from ingress_kit import (
    ORDER,
    create_topics,
    delete_topics,
    deploy_yaml,
    produce_event,
    produce_raw,
    read_topic,
    running_router,
    topic_size,
)
from support import wait_for

from headrace.core.codec import decode_command
from headrace.definitions import DefinitionCatalog, Deployed
from headrace.kafka import make_admin
from headrace.settings import Settings
from headrace.streams.cloudevents_in import SIGNAL_TYPE, START_TYPE, encode_event

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(settings: Settings) -> Iterator[Settings]:
    create_topics(settings)
    yield settings
    delete_topics(settings)


def _binary(data: Any, **attrs: str) -> list[tuple[str, bytes | None]]:
    base = {"ce_specversion": "1.0", "ce_id": "x1", "ce_source": "/t", "ce_type": START_TYPE}
    base.update(attrs)
    return [(k, v.encode()) for k, v in base.items() if v] + [("content-type", b"application/json")]


def _start(**data: Any) -> bytes:
    return json.dumps(data).encode()


# (name, key, value, headers, expected error code)
BAD: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]], str]] = [
    ("plain text, no headers", b"k1", b"hello there", [], "HR-WIRE-004"),
    ("JSON but no specversion", None, b'{"id": 1}', [], "HR-WIRE-004"),
    (
        "structured, broken JSON",
        None,
        b'{"specversion": "1.0", ',
        [("content-type", b"application/cloudevents+json")],
        "HR-WIRE-001",
    ),
    ("other content type", None, b"<x/>", [("content-type", b"text/xml")], "HR-WIRE-004"),
    (
        "binary, no source",
        None,
        _start(workflow="order"),
        _binary(None, ce_source=""),
        "HR-WIRE-004",
    ),
    ("binary, data not JSON", None, b"{not json", _binary(None), "HR-WIRE-001"),
    (
        "non-UTF-8 header and key",
        b"\xff\xfe",
        _start(workflow="order"),
        [*_binary(None), ("ce_subject", b"\xff\xfe")],
        "HR-WIRE-004",
    ),
    (
        "repeated ce_id header",
        None,
        _start(workflow="order"),
        [*_binary(None), ("ce_id", b"x2")],
        "HR-WIRE-004",
    ),
    (
        "header without value",
        None,
        _start(workflow="order"),
        [*_binary(None), ("ce_subject", None)],
        "HR-WIRE-004",
    ),
    (
        "specversion 0.3",
        None,
        _start(workflow="order"),
        _binary(None, ce_specversion="0.3"),
        "HR-WIRE-004",
    ),
    ("bad tenant", None, _start(workflow="order"), _binary(None, ce_tenant="a/b"), "HR-WIRE-004"),
    ("start data not an object", None, b"[1, 2]", _binary(None), "HR-WIRE-004"),
    ("start with a typo", None, _start(workflow="order", inputs={}), _binary(None), "HR-WIRE-004"),
    ("unknown workflow", None, _start(workflow="nope", input={}), _binary(None), "HR-DEF-002"),
    (
        "unknown version",
        None,
        _start(workflow="order", version=9, input={}),
        _binary(None),
        "HR-DEF-002",
    ),
    (
        "input fails the schema",
        None,
        _start(workflow="order", input={"total": 3}),
        _binary(None),
        "HR-RUN-001",
    ),
    (
        "bad run id",
        None,
        _start(workflow="order", input={"order_id": "a"}, run_id="has space"),
        _binary(None),
        "HR-WIRE-004",
    ),
    ("unknown type", None, b"{}", _binary(None, ce_type="com.example.nobody"), "HR-WIRE-006"),
    (
        "signal to both a run and a key",
        None,
        _start(name="go", run_id="r", correlation="c"),
        _binary(None, ce_type=SIGNAL_TYPE),
        "HR-WIRE-004",
    ),
]


def test_every_malformed_record_is_dead_lettered_and_the_next_good_one_gets_through(
    topics: Settings,
) -> None:
    deploy_yaml(topics, ORDER)
    good = encode_event(START_TYPE, "/crm", {"workflow": "order", "input": {"order_id": "ok"}})
    with running_router(topics):
        for _, key, value, headers, _ in BAD:
            produce_raw(topics, value, key=key, headers=headers, partition=0)
        produce_event(topics, good, partition=0)
        dead = read_topic(topics, topics.topics.dlq, len(BAD))
        (command,) = read_topic(topics, topics.topics.commands, 1)
    assert decode_command(command.value or b"").payload["input"] == {"order_id": "ok"}
    dead.sort(key=lambda r: int(r.header("headrace-source-offset") or -1))
    assert len(dead) == len(BAD)
    for offset, (record, (name, key, value, headers, code)) in enumerate(
        zip(dead, BAD, strict=True)
    ):
        assert record.header("headrace-error-code") == code, (name, record.header("headrace-error"))
        assert record.header("headrace-error"), name
        assert record.header("headrace-source-topic") == topics.topics.ingress, name
        assert record.header("headrace-source-partition") is not None, name
        assert record.header("headrace-source-offset") == str(offset), name
        assert (record.key, record.value) == (key, value), name
        # the original headers come back first, in order, duplicates and all
        assert record.headers[: len(headers)] == headers, name


def test_dead_letter_reasons_say_what_to_do(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    with running_router(topics):
        produce_raw(topics, _start(workflow="nope", input={}), headers=_binary(None), partition=0)
        produce_raw(
            topics, _start(workflow="order", input={"total": 3}), headers=_binary(None), partition=0
        )
        first, second = sorted(
            read_topic(topics, topics.topics.dlq, 2),
            key=lambda r: r.header("headrace-source-offset") or "",
        )
    assert "'nope' is not deployed" in (first.header("headrace-error") or "")
    assert "headrace deploy" in (first.header("headrace-error") or "")
    reason = second.header("headrace-error") or ""
    assert "order@1" in reason and "'order_id' is a required property" in reason


class _Lagging:
    """A catalog that hides what was deployed after it started until someone catches it up:
    the background reader at its slowest."""

    def __init__(self, inner: DefinitionCatalog) -> None:
        self.inner = inner
        self.visible = {(d.definition.type, d.definition.version) for d in inner.all()}
        self.catch_ups = 0

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None:
        d = self.inner.get(workflow_type, version)
        if d is None or (d.definition.type, d.definition.version) not in self.visible:
            return None
        return d

    def all(self) -> list[Deployed]:
        return [
            d for d in self.inner.all() if (d.definition.type, d.definition.version) in self.visible
        ]

    def wait_current(self, timeout: float = 30.0) -> None:
        self.catch_ups += 1
        self.inner.wait_current(timeout)
        self.visible = {(d.definition.type, d.definition.version) for d in self.inner.all()}

    def on_deployed(self, listener: Callable[[Deployed], None]) -> None:
        self.inner.on_deployed(listener)


def test_a_start_right_after_its_deploy_waits_for_the_catalog(topics: Settings) -> None:
    import threading

    from headrace.streams.router import Router

    catalog = DefinitionCatalog(topics).start(wait=30)
    lagging = _Lagging(catalog)
    router = Router(topics, lagging)
    assigned = threading.Event()
    thread = threading.Thread(target=router.run, kwargs={"on_assigned": assigned.set}, daemon=True)
    thread.start()
    try:
        wait_for(assigned.is_set, 60, "assignment")
        deploy_yaml(topics, ORDER)
        data = {"workflow": "order", "input": {"order_id": "fresh"}}
        produce_event(topics, encode_event(START_TYPE, "/crm", data))
        (got,) = read_topic(topics, topics.topics.commands, 1)
    finally:
        router.stop()
        thread.join(30)
        catalog.stop()
    assert decode_command(got.value or b"").payload["input"] == {"order_id": "fresh"}
    assert lagging.catch_ups >= 1
    assert topic_size(topics, topics.topics.dlq) == 0


def test_a_command_kafka_refuses_is_dead_lettered(topics: Settings) -> None:
    deploy_yaml(topics, ORDER)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topics.topics.commands,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin = make_admin(topics)
    for f in admin.incremental_alter_configs([resource]).values():
        f.result()
    noise = base64.b64encode(os.urandom(6000)).decode()  # lz4 must not shrink it below 2000
    big = {"workflow": "order", "input": {"order_id": noise}}
    small = {"workflow": "order", "input": {"order_id": "small"}}
    # Sent before the router starts, both are routed in one batch and their commands (same
    # tenant, same partition) share a record batch, which the broker refuses as a whole.
    produce_event(topics, encode_event(START_TYPE, "/crm", big), partition=0)
    produce_event(topics, encode_event(START_TYPE, "/crm", small), partition=0)
    with running_router(topics):
        (dead,) = read_topic(topics, topics.topics.dlq, 1)
        (ok,) = read_topic(topics, topics.topics.commands, 1)
    assert dead.header("headrace-error-code") == "HR-KAF-003"
    assert "commands" in (dead.header("headrace-error") or "")
    assert decode_command(ok.value or b"").payload["input"] == {"order_id": "small"}
