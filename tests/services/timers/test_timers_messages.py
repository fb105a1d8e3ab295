"""Validation of `timers` messages at the service's boundary."""

from __future__ import annotations

import json

import pytest

from headrace.core.calendar import parse_calendar
from headrace.core.decider.effects import ArmTimer, CancelTimer
from headrace.core.outbox import messages_for
from headrace.services.timers.messages import due_of, parse_op
from headrace.topology import Routing, Topics

ROUTING = Routing(Topics("x."), 6)


def test_outbox_messages_parse() -> None:
    arm, cancel = messages_for(
        [
            ArmTimer("r:3", "acme", "r", "wait", 1000, None),
            CancelTimer("r:3", "acme", "r"),
        ],
        ROUTING,
    )
    op = parse_op(arm.value)
    assert (op.op, op.timer_id, op.run_key, op.due) == ("arm", "r:3", "acme/r", 1000)
    assert op.command is not None and op.command.payload == {"timer_id": "r:3"}
    assert parse_op(cancel.value).op == "cancel"


def test_business_time_resolves_in_the_calendar_or_as_elapsed_time() -> None:
    [arm] = messages_for(
        [
            ArmTimer(
                "r:4",
                "acme",
                "r",
                "wait",
                None,
                {"calendar": "c", "duration_ms": 3_600_000, "from": 1_780_300_800_000},
            )
        ],
        ROUTING,
    )
    op = parse_op(arm.value)
    cal = parse_calendar({"name": "c", "timezone": "UTC", "hours": {"*": "09:00-10:00"}})
    # 2026-06-01T08:00Z: one business hour is 09:00-10:00 that day
    assert due_of(op, cal) == 1_780_300_800_000 + 2 * 3_600_000
    assert due_of(op, None) == 1_780_300_800_000 + 3_600_000


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"op": "explode"}, "expected one of"),
        ({"op": "arm", "timer_id": "t", "tenant": "a", "run_id": "r"}, "`command`"),
        ({"op": "cancel", "timer_id": "", "tenant": "a", "run_id": "r"}, "timer_id"),
        ({"op": "freeze", "timer_id": "t", "tenant": "a", "run_id": "r"}, "`at`"),
        (
            {"op": "freeze", "timer_id": "t", "tenant": "a", "run_id": "r", "at": 1, "policy": "x"},
            "policy",
        ),
        (
            {
                "op": "arm",
                "timer_id": "t",
                "tenant": "a",
                "run_id": "r",
                "command": {
                    "command_id": "c",
                    "tenant": "a",
                    "run_id": "r",
                    "type": "FireTimer",
                    "time": 0,
                },
            },
            "needs `due`",
        ),
    ],
)
def test_bad_messages_say_what_is_wrong(doc: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_op(json.dumps(doc).encode())


def test_non_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_op(b"\x00\x01")
    with pytest.raises(ValueError, match="tombstone"):
        parse_op(None)


def test_a_batch_message_carries_several_operations_in_order() -> None:
    import json as _json

    from headrace.core.decider.effects import ArmTimer, CancelTimer
    from headrace.core.outbox import batch_timer_ops, messages_for
    from headrace.services.timers.messages import parse_ops
    from headrace.settings import Settings

    routing = Settings(partitions=1).routing
    effects = [
        ArmTimer("r1:1", "t", "r1", "wait", 1000, None),
        ArmTimer("r2:1", "t", "r2", "wait", 2000, None),
        CancelTimer("r1:1", "t", "r1"),
    ]
    (msg,) = batch_timer_ops(messages_for(effects, routing), routing)
    assert _json.loads(msg.value)["op"] == "batch"
    ops = parse_ops(msg.value)
    assert [(o.op, o.timer_id) for o in ops] == [
        ("arm", "r1:1"),
        ("arm", "r2:1"),
        ("cancel", "r1:1"),
    ]
    with pytest.raises(ValueError, match=r"ops\[1\]"):
        parse_ops(
            b'{"op":"batch","ops":[{"op":"cancel","timer_id":"a","tenant":"t","run_id":"r"},{"op":"nope"}]}'
        )
