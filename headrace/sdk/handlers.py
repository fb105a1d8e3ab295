"""Task handlers a worker registers, and which one a dispatch goes to.

A dispatch names its workflow step and carries the step's ``config``. It is
handled by the handler registered under ``config["task"]`` when the step sets
one (so several steps, or steps of several workflows, share a handler), else
under the step's name, else by the catch-all handler ``"*"``.

Handlers are plain functions, sync or async, taking the input and optionally
the :class:`~headrace.sdk.context.TaskContext`::

    @worker.task("charge-card")
    async def charge(input, ctx): ...

    @worker.task("send-email")
    def send(input): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.core.task_codec import TaskDispatch

CATCH_ALL = "*"
TASK_CONFIG_KEY = "task"


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_context: bool


def make_handler(name: str, fn: Callable[..., Any]) -> Handler:
    """Inspect ``fn`` once: is it a coroutine function, does it take a context?"""
    if not callable(fn):
        raise TypeError(f"task handler {name!r} must be callable, got {type(fn).__name__}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
    if not params and not varargs:
        raise TypeError(
            f"task handler {name!r} takes no arguments; it must take the input "
            "(and optionally the context): def handler(input, ctx)"
        )
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )
    return Handler(name, fn, is_async, takes_context=len(params) >= 2 or varargs)


class Handlers:
    """The handlers of one worker, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Handler] = {}

    def add(self, name: str, fn: Callable[..., Any]) -> Handler:
        if not name:
            raise ValueError("a task handler needs a name (a step name, or '*' for any)")
        if name in self._by_name:
            raise ValueError(
                f"task handler {name!r} is registered twice ({self._by_name[name].fn!r} and "
                f"{fn!r}) — give one of them another name"
            )
        handler = self._by_name[name] = make_handler(name, fn)
        return handler

    def find(self, dispatch: TaskDispatch) -> Handler | None:
        task = dispatch.config.get(TASK_CONFIG_KEY)
        if isinstance(task, str):
            found = self._by_name.get(task)
            if found is not None:
                return found
        return self._by_name.get(dispatch.step) or self._by_name.get(CATCH_ALL)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
