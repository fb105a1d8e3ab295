"""The worker SDK: serve task queues from Python.

::

    from headrace.sdk import NonRetryable, Worker

    worker = Worker(queues=["payments"], concurrency=16)

    @worker.task("charge-card")
    async def charge(input, ctx):
        ...

    if __name__ == "__main__":
        worker.run()

Run it with ``python my_worker.py`` or ``headrace worker run my_worker:worker``.
See docs/sdk.md.
"""

from headrace.sdk.context import TaskContext
from headrace.sdk.errors import NonRetryable, Retryable, TaskError
from headrace.sdk.worker import Worker

__all__ = ["NonRetryable", "Retryable", "TaskContext", "TaskError", "Worker"]
