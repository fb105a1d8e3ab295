"""The order service of the order-processing example: a worker written with the headrace SDK.

It serves the queue ``orders``: the steps ``open-order``, ``fraud-check`` and
``confirm-order``, and the compensation ``cancel-order``. A dispatch goes to the
handler registered under its step's name (docs/sdk.md).

    cd examples/order-processing && headrace worker run orders_worker:worker

The order book is kept in memory (a real service would use its database).
Every handler is idempotent on ``ctx.idempotency_key``, which is the same on
every delivery and every retry of a step: a task delivered twice (after a
crash, say) opens one order, not two.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from headrace.sdk import NonRetryable, TaskContext, Worker

worker = Worker(queues=["orders"], concurrency=8)
log = logging.getLogger("orders")

_lock = threading.Lock()
_book: dict[str, dict[str, Any]] = {}  # run id → the order's record
_done: dict[str, dict[str, Any]] = {}  # idempotency key → the answer already given


def _once(key: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The first answer for ``key``, remembered (call with the lock held)."""
    return _done.setdefault(key, answer)


@worker.task("open-order")
def open_order(input: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Record the order as pending and give it an order number."""
    with _lock:
        if ctx.idempotency_key in _done:
            return _done[ctx.idempotency_key]
        number = f"SO-{len(_book) + 1:05d}"
        _book[ctx.run_id] = {"number": number, "order_id": input["order_id"], "status": "pending"}
        log.info("opened order %s as %s (run %s)", input["order_id"], number, ctx.run_id)
        return _once(ctx.idempotency_key, {"number": number, "status": "pending"})


@worker.task("fraud-check")
async def fraud_check(input: dict[str, Any]) -> dict[str, Any]:
    """A toy risk score from 0 to 99: large orders and throwaway addresses score high."""
    total = float(input.get("total") or 0)
    email = str((input.get("customer") or {}).get("email") or "")
    reasons = []
    score = min(60, int(total // 100))
    if total > 5000:
        reasons.append("large order")
        score += 30
    if email.endswith((".invalid", "@mailinator.com")):
        reasons.append("throwaway email address")
        score += 80
    return {"score": min(score, 99), "reasons": reasons}


@worker.task("confirm-order")
def confirm_order(input: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Mark the order confirmed and tell the customer (here: a log line)."""
    with _lock:
        record = _book.get(ctx.run_id)
        if record is None:
            # The worker restarted and lost its in-memory book: say so, do not guess.
            raise NonRetryable("order.unknown", f"no open order for run {ctx.run_id}")
        record["status"] = "confirmed"
        log.info(
            "email to %s: order %s is on its way, tracking %s",
            input.get("email"),
            input.get("number"),
            input.get("tracking"),
        )
        return _once(ctx.idempotency_key, {"status": "confirmed", "emailed": input.get("email")})


@worker.task("cancel-order")
def cancel_order(input: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Compensation of open-order: mark it cancelled and tell the customer."""
    with _lock:
        record = _book.get(ctx.run_id)
        if record is not None:
            record["status"] = "cancelled"
        log.info(
            "email to %s: we are sorry, order %s was cancelled", input.get("email"), input["number"]
        )
        return _once(ctx.idempotency_key, {"status": "cancelled"})
