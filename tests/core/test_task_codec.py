"""The task protocol's messages: TaskDispatch and TaskResult on the wire."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from headrace.core.codec import encode_command
from headrace.core.envelope import Command, CommandType
from headrace.core.schemas import TASK_DISPATCH, TASK_RESULT, default_schemas
from headrace.core.task_codec import (
    DispatchKind,
    ResultKind,
    TaskDispatch,
    TaskResult,
    completed,
    decode_dispatch,
    decode_result,
    encode_dispatch,
    encode_result,
    failed,
    heartbeat,
    result_target,
    started,
)
from headrace.errors import ErrorCode, HeadraceError

ROOT = Path(__file__).resolve().parents[2]
PINNED = {TASK_DISPATCH: "9c07f3e38b07f58c", TASK_RESULT: "80b93d8a279b0a48"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _dispatch(**changes: Any) -> TaskDispatch:
    base: dict[str, Any] = {
        "task_id": "r1:5",
        "attempt": 2,
        "idempotency_key": "r1/charge",
        "queue": "payments",
        "priority": 7,
        "tenant": "acme",
        "run_id": "r1",
        "workflow_type": "order",
        "step": "charge",
        "input": {"amount": 12.5, "lines": [1, 2]},
        "config": {"method": "POST"},
        "dispatched_at": 1_767_225_600_000,
        "result_topic": "headrace.task-results",
        "result_key": "acme/r1",
        "result_partition": 4,
        "schedule_to_start_ms": None,
        "start_to_close_ms": 30_000,
        "heartbeat_ms": 5_000,
        "max_attempts": 3,
    }
    return TaskDispatch(**{**base, **changes})


@pytest.mark.parametrize("name", [TASK_DISPATCH, TASK_RESULT])
def test_task_schema_fingerprints_are_pinned_and_documented(name: str) -> None:
    fingerprint = default_schemas().current(name).fingerprint.hex()
    assert fingerprint == PINNED[name], (
        f"{name} changed: move the old .avsc to schemas/avro/history/, update PINNED and "
        "docs/tasks.md — workers in other languages read these"
    )
    doc = (ROOT / "docs" / "tasks.md").read_text()
    row = re.search(rf"`{re.escape(name)}` \| `([0-9a-f]{{16}})`", doc)
    assert row and row.group(1) == fingerprint


@given(json_values, json_values, st.sampled_from(list(DispatchKind)))
def test_dispatch_round_trips(task_input: Any, config_value: Any, kind: DispatchKind) -> None:
    d = _dispatch(input=task_input, config={"k": config_value}, kind=kind)
    assert decode_dispatch(encode_dispatch(d)) == d


@given(json_values, json_values, st.booleans())
def test_results_round_trip(output: Any, details: Any, retryable: bool) -> None:
    d = _dispatch()
    for r in (
        started(d, "w1", 1),
        heartbeat(d, "w1", 2, progress=details),
        completed(d, "w1", 3, output),
        failed(d, "w1", 4, "card.declined", "no", retryable=retryable, details=details),
    ):
        assert decode_result(encode_result(r)) == r


def test_the_helpers_echo_the_attempt_and_the_target_is_the_dispatchs() -> None:
    d = _dispatch()
    r = failed(d, "w1", 9, "x", "y", retryable=False)
    assert (r.task_id, r.attempt, r.kind) == ("r1:5", 2, ResultKind.FAILED)
    assert r.error is not None and r.error.to_json() == {
        "code": "x",
        "message": "y",
        "retryable": False,
    }
    assert result_target(d) == ("headrace.task-results", "acme/r1", 4)
    assert not d.last_attempt and _dispatch(attempt=3).last_attempt


def _plain(name: str) -> Any:
    """The schema as another language's Avro library would load it (no headrace code)."""
    source = json.loads((ROOT / "schemas" / "avro" / name).read_text())
    return parse_schema(source)


def test_a_plain_avro_library_reads_dispatches_and_writes_results_headrace_reads() -> None:
    raw = encode_dispatch(_dispatch())
    assert raw[:2] == b"\xc3\x01" and raw[2:10].hex() == PINNED[TASK_DISPATCH]
    record = schemaless_reader(io.BytesIO(raw[10:]), _plain("task_dispatch.avsc"), None)
    assert record["kind"] == "dispatch" and json.loads(record["input"])["amount"] == 12.5
    assert record["result_partition"] == 4 and record["idempotency_key"] == "r1/charge"

    body = io.BytesIO()
    schemaless_writer(
        body,
        _plain("task_result.avsc"),
        {
            "task_id": "r1:5",
            "attempt": 2,
            "kind": "failed",
            "worker": "go-worker-1",
            "time": 1_767_225_600_123,
            "error": {"code": "http.503", "message": "unavailable", "details": '{"try": 2}'},
        },
    )
    frame = b"\xc3\x01" + bytes.fromhex(PINNED[TASK_RESULT]) + body.getvalue()
    result = decode_result(frame)
    assert result.error is not None
    assert (result.error.code, result.error.retryable, result.error.details) == (
        "http.503",
        True,  # the schema's default
        {"try": 2},
    )
    assert result.output is None and result.progress is None


def test_a_failed_result_without_an_error_is_refused() -> None:
    bad = TaskResult("r1:5", 1, ResultKind.FAILED, "w1", 0)
    with pytest.raises(HeadraceError) as info:
        decode_result(encode_result(bad))
    assert info.value.code is ErrorCode.DECODE_FAILED
    assert "failed result carries no error" in info.value.message


def test_other_records_and_bad_json_are_decode_errors() -> None:
    command = encode_command(Command("c1", "acme", "r1", CommandType.CompleteTask, 0, {}))
    with pytest.raises(HeadraceError) as info:
        decode_result(command)
    assert info.value.code is ErrorCode.DECODE_FAILED and "expected a io.headrace.TaskResult" in (
        info.value.message
    )
    with pytest.raises(HeadraceError) as info:
        encode_dispatch(_dispatch(input={"x": float("nan")}))
    assert info.value.code is ErrorCode.ENCODE_FAILED and "r1:5 input" in info.value.message
