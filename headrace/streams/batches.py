"""Process a faust stream in batches without ever acknowledging a batch that failed.

``Stream.take_events`` acknowledges the batch it yielded in a ``finally``
block: when the code processing the batch raises — or is cancelled because the
worker is stopping — faust still acknowledges every event of the batch, and
their offsets are committed. For a service whose effects must be durable
before its input is acknowledged that is a silent loss (the test
``tests/streams/test_batches.py`` shows it with faust alone).

:func:`run_batches` closes that gap:

* a batch being processed when the worker stops is finished first (the
  processing task is shielded from the cancellation), so what faust then
  acknowledges has been processed;
* a batch whose processing raises stops the process at once (``os._exit``),
  before faust can acknowledge anything: the batch is delivered again after the
  restart and processed again, which every headrace service makes idempotent.
  Failures of single messages (bad input) are not this path — services
  dead-letter those and go on; this is for the batch as a whole failing, e.g.
  Kafka not acknowledging its output.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger("headrace.streams.batches")

EXIT_BATCH_FAILED = 70


def fail_stop(what: str, exc: BaseException | None) -> None:
    """Log and end the process without acknowledging anything (never returns)."""
    log.critical(
        "%s failed; stopping the worker without acknowledging the batch (it will be "
        "processed again after the restart): %r",
        what,
        exc,
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


async def run_batches(
    stream: Any,
    process: Callable[[Sequence[Any]], Awaitable[None]],
    *,
    size: int,
    within: float,
    what: str = "batch",
) -> None:
    """Feed ``stream`` to ``process`` in batches of at most ``size`` events."""
    async for batch in stream.take_events(size, within=within):
        task = asyncio.ensure_future(process(batch))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The worker is stopping: finish this batch before faust acknowledges it.
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                fail_stop(what, task.exception())
            raise
        except Exception as exc:
            fail_stop(what, exc)
