"""A worker module for the process tests: ``headrace worker run worker_app:worker``.

``gated`` tasks run until the test creates the file named by ``input.gate`` in
``TEST_GATE_DIR`` (so a test decides when a task ends, without sleeping), and
note in that folder that they started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from headrace.sdk import Retryable, TaskContext, Worker

GATES = Path(os.environ.get("TEST_GATE_DIR", "."))

worker = Worker(
    queues=[os.environ.get("TEST_QUEUE", "jobs")],
    concurrency=int(os.environ.get("TEST_CONCURRENCY", "4")),
    drain_timeout=float(os.environ.get("TEST_DRAIN_TIMEOUT", "25")),
)


@worker.task("gated")
def gated(input: Any, ctx: TaskContext) -> dict[str, Any]:
    (GATES / f"started-{ctx.task_id}-{os.getpid()}").touch()
    gate = GATES / input["gate"]
    deadline = time.monotonic() + 60
    while not gate.exists():
        if time.monotonic() > deadline:
            raise Retryable("test.gate", f"gate {gate} never opened")
        time.sleep(0.01)
    return {"pid": os.getpid()}


@worker.task("echo")
async def echo(input: Any, ctx: TaskContext) -> dict[str, Any]:
    return {"pid": os.getpid(), "input": input}
