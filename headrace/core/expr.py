"""Expressions: jq, compiled once, sandboxed, deterministic.

Every guard, data mapping and trigger filter goes through :func:`compile_expr`
and :meth:`Expression.evaluate`; nothing else in headrace talks to libjq. That
keeps three promises in one place:

* **Deterministic.** A prelude replaces ``now`` with the run's logical time and
  empties ``env`` / ``$ENV``; the time-zone dependent builtins are refused.
* **Bounded.** libjq cannot be interrupted mid-evaluation, so validation refuses
  what can loop forever: recursive ``def``, ``repeat``, ``while``, ``until``,
  ``recurse`` with arguments, ``infinite``, and ``import`` / ``include`` / ``input``.
* **Cheap.** Programs are cached by source text; plain paths such as
  ``.order.total`` or ``$input.id`` skip libjq (a dict walk, ~0.3 µs vs ~9 µs).

Inside an expression ``.`` is the value being mapped (usually the run data),
``$input`` the run's input, ``$run`` its identity (``{id, tenant, type,
version}``) and any step-specific variables (``$result``, ``$item``,
``$index``, ``$data``, ``$error``, ``$signal``) declared at compile time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jq

from headrace.core.jq_sandbox import check_safe, explain_compile_error, free_variables
from headrace.errors import ErrorCode, HeadraceError

__all__ = [
    "BASE_VARIABLES",
    "STEP_VARIABLES",
    "Context",
    "Expression",
    "check_safe",
    "compile_expr",
    "free_variables",
]

# The variables every expression may use, and those a step may add.
BASE_VARIABLES = ("input", "run")
STEP_VARIABLES = ("result", "item", "index", "data", "error", "signal", "event", "decision")

_PLAIN_PATH = re.compile(r"^(\$[A-Za-z_][A-Za-z0-9_]*)?((?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")


@dataclass(slots=True)
class Context:
    """The variables of one evaluation besides ``.``.

    Treat it as immutable. It is not a frozen dataclass because the decider
    builds one per evaluation and a frozen constructor costs 3x as much.
    """

    now_ms: int = 0
    input: Any = None
    run: Mapping[str, Any] | None = None
    vars: Mapping[str, Any] | None = None


_EMPTY = Context()


class Expression:
    """A compiled, validated expression. Use :func:`compile_expr` to get one."""

    __slots__ = ("_path", "_program", "_root", "source", "variables")

    def __init__(self, source: str, variables: tuple[str, ...]) -> None:
        self.source = source
        self.variables = variables
        self._path: tuple[str, ...] | None = None
        self._root: str | None = None
        self._program: Any = None
        m = _PLAIN_PATH.match(source.strip())
        if m and (m.group(1) or m.group(2)) is not None and source.strip():
            root = m.group(1)[1:] if m.group(1) else None
            if root is None or root in BASE_VARIABLES or root in variables:
                self._root = root
                self._path = tuple(p for p in m.group(2).split(".") if p)
                return
        check_safe(source)
        binds = "".join(f"$__v.{name} as ${name} | " for name in variables)
        program = (
            ". as [$__now, $input, $run, $__v, $__d] | " + binds + "def now: $__now; "
            "def env: {}; {} as $ENV | $__d | (" + source + "\n)"
        )
        try:
            self._program = jq.compile(program)
        except ValueError as exc:
            msg = explain_compile_error(str(exc), len(program) - len(source) - 2, source)
            raise HeadraceError(
                ErrorCode.EXPRESSION_INVALID, f"{source!r} does not compile: {msg}"
            ) from None

    @property
    def is_plain_path(self) -> bool:
        return self._path is not None

    def _walk(self, value: Any) -> Any:
        assert self._path is not None
        for key in self._path:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise HeadraceError(
                    ErrorCode.EXPRESSION_FAILED,
                    f"{self.source!r}: cannot index {type(value).__name__} with {key!r}",
                )
            value = value.get(key)
        return value

    def _fast_root(self, data: Any, ctx: Context) -> Any:
        if self._root is None:
            return data
        if self._root == "input":
            return ctx.input
        if self._root == "run":
            run = ctx.run or {}
            # `$run` itself is a copy (the caller may keep it); `$run.id` only reads
            return run if self._path and type(run) is dict else dict(run)
        return (ctx.vars or {}).get(self._root)

    def evaluate_all(self, data: Any, ctx: Context = _EMPTY) -> list[Any]:
        """Every output of the expression."""
        if self._path is not None:
            return [self._walk(self._fast_root(data, ctx))]
        args = [ctx.now_ms / 1000.0, ctx.input, dict(ctx.run or {}), dict(ctx.vars or {}), data]
        try:
            return list(self._program.input_value(args).all())
        except ValueError as exc:
            raise HeadraceError(
                ErrorCode.EXPRESSION_FAILED, f"{self.source!r} failed: {exc}"
            ) from None

    def evaluate(self, data: Any, ctx: Context = _EMPTY) -> Any:
        """The first output, or ``None`` when there is none (jq's ``empty``)."""
        if self._path is not None:
            return self._walk(self._fast_root(data, ctx))
        out = self.evaluate_all(data, ctx)
        return out[0] if out else None

    def test(self, data: Any, ctx: Context = _EMPTY) -> bool:
        """jq truthiness of the first output (``false``/``null``/no output are false)."""
        value = self.evaluate(data, ctx)
        return value is not None and value is not False

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@lru_cache(maxsize=8192)
def _compile_cached(source: str, variables: tuple[str, ...]) -> Expression:
    return Expression(source, variables)


def compile_expr(source: str, variables: Iterable[str] = ()) -> Expression:
    """Compile ``source`` (cached); ``variables`` are the step-specific ``$names`` it may use."""
    return _compile_cached(source, tuple(sorted(set(variables))))
