"""The order-processing example end to end, as `make demo` runs it: three orders, three endings.

Real broker, every service a child process: orchestrator, timers, tasks, the
HTTP connector, the example's shop (inventory, payments, shipping over HTTP)
and its SDK worker (the order service). One order ships; one has its card
declined (402) and the saga undoes what was done, newest first; one meets a 503
with ``Retry-After: 1`` and is retried no sooner than that.
"""

from __future__ import annotations

import uuid

import pytest
from examples_kit import (
    Platform,
    deploy_text,
    example_definition,
    of,
    order_input,
    run_log,
    start_runs,
    status,
    wait_ended,
)

from headrace.core.envelope import EventType

pytestmark = pytest.mark.integration

E = EventType


def test_three_orders_complete_compensate_and_retry(platform: Platform) -> None:
    settings = platform.settings
    deploy_text(settings, example_definition(platform.ports["shop"]), "order-processing.yaml")
    tag = uuid.uuid4().hex[:6]
    happy, declined, retried = (f"{name}-{tag}" for name in ("happy", "declined", "retried"))
    start_runs(
        settings,
        "order-processing",
        {
            happy: order_input("happy"),
            declined: order_input("declined"),
            retried: order_input("retried"),
        },
    )
    runs = wait_ended(settings, [happy, declined, retried], 60, platform)

    # -- the happy path: every step once, in order, and a result that names them
    evs = runs[happy]
    assert status(evs) == "completed"
    done = [e.payload["step"] for e in of(evs, E.StepCompleted)]
    tasks = ["open-order", "reserve-inventory", "fraud-check", "charge-payment"]
    assert set(tasks) <= set(done)
    assert done.index("charge-payment") < done.index("ship-order") < done.index("confirm-order")
    assert not of(evs, E.TaskFailed) and not of(evs, E.CompensationStarted)
    output = of(evs, E.RunCompleted)[0].payload["output"]
    assert output["order_id"] == "A-1001"
    assert output["number"].startswith("SO-") and output["charge_id"].startswith("ch_")
    assert output["tracking"].startswith("HR")

    # -- the declined card: a 402 is an answer (no retry), the catch fails the run, and
    #    the saga undoes the completed steps in reverse order of their completion
    evs = runs[declined]
    assert status(evs) == "failed"
    [failed] = of(evs, E.TaskFailed, "charge-payment")
    error = failed.payload["error"]
    assert (error["code"], error["retryable"], error["details"]["status"]) == (
        "http.4xx",
        False,
        402,
    )
    assert not of(evs, E.TaskRetryScheduled)
    assert of(evs, E.ErrorCaught, "charge-payment")
    run_error = of(evs, E.RunFailed)[0].payload["error"]
    assert run_error["code"] == "order.payment_failed"
    assert "card ending 0002 was declined" in run_error["message"]
    compensable = {"open-order": "cancel-order", "reserve-inventory": "release-inventory"}
    completed = [
        e.payload["step"] for e in of(evs, E.StepCompleted) if e.payload["step"] in compensable
    ]
    undone = [e.payload["compensation"] for e in of(evs, E.CompensationStepCompleted)]
    assert undone == [compensable[s] for s in reversed(completed)]
    assert undone == ["release-inventory", "cancel-order"]  # the parallel step came second
    kinds = [e.type for e in evs]
    assert kinds.index(E.CompensationStarted) < kinds.index(E.CompensationCompleted)
    assert kinds[-1] is E.RunFailed and E.CompensationFailed not in kinds
    assert not of(evs, E.StepStarted, "ship-order")

    # -- the busy processor: a 503 with Retry-After: 1, retried once, no sooner, then shipped
    evs = runs[retried]
    assert status(evs) == "completed"
    [first] = of(evs, E.TaskFailed, "charge-payment")
    error = first.payload["error"]
    assert (error["code"], error["retryable"]) == ("http.5xx", True)
    assert error["details"]["retry_after_ms"] == 1000
    [retry] = of(evs, E.TaskRetryScheduled, "charge-payment")
    assert retry.payload["attempt"] == 2 and retry.payload["delay_ms"] >= 1000
    attempts = [e.payload["attempt"] for e in of(evs, E.TaskScheduled, "charge-payment")]
    assert attempts == [1, 2]
    keys = {e.idempotency_key for e in of(evs, E.TaskScheduled, "charge-payment")}
    assert keys == {f"{retried}/charge-payment"}  # the same key on both attempts
    assert of(evs, E.StepCompleted, "ship-order")

    # -- every run's log verifies, and the shop agrees with the histories
    for run_id in (happy, declined, retried):
        log = run_log(settings, run_id)
        assert log is not None and log.verify().ok, run_id
    shop = platform.shop_state()
    by_order = {r["order_id"]: r["status"] for r in shop["reservations"].values()}
    assert by_order == {"A-1001": "reserved", "B-1002": "released", "C-1003": "reserved"}
    assert sorted(c["order_id"] for c in shop["charges"].values()) == ["A-1001", "C-1003"]
    assert shop["stock"]["TEAPOT-03"] == 20  # B-1002's teapot went back on the shelf
    assert sorted(s["order_id"] for s in shop["shipments"].values()) == ["A-1001", "C-1003"]
