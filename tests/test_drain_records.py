"""Drain records and what a refusal says (no broker: the pure parts of headrace.drain)."""

from __future__ import annotations

import pytest

from headrace.core.envelope import Command, CommandType, canonical_json
from headrace.drain import Drain, decode_drain, drain_key, refused_start_notice
from headrace.errors import ErrorCode


def test_a_drain_round_trips_through_its_record() -> None:
    d = Drain("type", "order", "migration", "ops", 1_767_225_600_000)
    assert d.key == "drain/type/order" == drain_key("type", "order")
    assert decode_drain(d.key, canonical_json(d.to_json()).encode()) == d


def test_a_record_under_the_wrong_key_or_of_another_kind_is_refused() -> None:
    d = Drain("tenant", "acme")
    with pytest.raises(ValueError):
        decode_drain("drain/tenant/other", canonical_json(d.to_json()).encode())
    with pytest.raises(ValueError):
        drain_key("region", "eu")


def test_the_refusal_says_what_since_when_who_why_and_how_to_undo() -> None:
    text = Drain("type", "order", "migration", "ops", 1_767_225_600_000).refusal()
    assert "workflow type 'order' is draining" in text
    assert "2026-01-01T00:00:00Z" in text and "by ops" in text and "migration" in text
    assert text.endswith("`headrace undrain --type order` accepts them again")
    assert "tenant 'acme'" in Drain("tenant", "acme").refusal()


def _start(parent: dict | None) -> Command:
    payload = {"workflow": "kid", "version": None, "input": {}, "parent": parent}
    return Command("p:4/start", "acme", "p:4", CommandType.StartRun, 42, payload)


def test_a_refused_call_child_is_reported_to_its_waiting_parent_as_failed() -> None:
    parent = {"tenant": "acme", "run_id": "p", "step": "ask", "wait": True}
    notice = refused_start_notice(_start(parent), "draining")
    assert notice is not None
    assert (notice.tenant, notice.run_id, notice.type) == ("acme", "p", CommandType.ChildFinished)
    assert notice.command_id == "p:4/finished"  # what the child itself would have sent
    assert notice.payload == {
        "child_run_id": "p:4",
        "status": "failed",
        "error": {"code": ErrorCode.DRAINING.code, "message": "draining"},
    }


def test_spawned_children_and_top_level_starts_have_nobody_to_tell() -> None:
    spawned = {"tenant": "acme", "run_id": "p", "step": "side", "wait": False}
    assert refused_start_notice(_start(spawned), "x") is None
    assert refused_start_notice(_start(None), "x") is None
