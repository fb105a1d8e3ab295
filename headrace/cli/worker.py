"""``headrace worker run module:worker``: run a worker written with the SDK."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer

from headrace.errors import ErrorCode, HeadraceError

app = typer.Typer(help="Run task workers written with headrace.sdk.", no_args_is_help=True)


def load_worker(spec: str) -> Any:
    """The :class:`~headrace.sdk.Worker` named by ``module:attribute`` (a factory is called;
    a class is refused — it is not a worker, and calling it would not make the intended one)."""
    from headrace.sdk import Worker

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"worker {spec!r} is not 'module:attribute' — e.g. 'payments.worker:worker'",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current folder is importable
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"cannot import module {module_name!r} for worker {spec!r}: {exc} — run from the "
            "folder that holds it, or install it",
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"module {module_name!r} has no attribute {attr!r} — name the Worker object "
                "(e.g. 'worker = Worker(queues=[...])')",
            ) from None
    if isinstance(obj, type):
        # Calling a class would build a worker with no queues (or something else entirely).
        what = "the Worker class" if issubclass(obj, Worker) else "the class"
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"{spec} must name a Worker instance, got {what} {obj.__module__}.{obj.__qualname__} "
            "— name the object (e.g. 'worker = Worker(queues=[...])') or a function that "
            "returns one",
        )
    if not isinstance(obj, Worker) and callable(obj):
        obj = obj()
    if not isinstance(obj, Worker):
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"{spec} is a {type(obj).__name__}, not a headrace.sdk.Worker",
        )
    return obj


@app.command("run")
def run(
    spec: Annotated[str, typer.Argument(help="module:attribute of a headrace.sdk.Worker")],
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="task attempts run at once")
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="serve /metrics and /healthz on this port of HEADRACE_WEB_HOST (0: none)",
        ),
    ] = 0,
) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain (finish running tasks, commit, leave)."""
    from headrace.logs import configure
    from headrace.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, settings.log_format, service="worker")
    worker = load_worker(spec)
    if concurrency is not None:
        if concurrency < 1:
            raise typer.BadParameter("--concurrency must be at least 1")
        worker.concurrency = concurrency
    worker.run(metrics_port=metrics_port or None)
