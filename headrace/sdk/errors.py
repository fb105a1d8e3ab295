"""What a task handler raises to fail an attempt, and how any exception becomes a failure.

A handler ends an attempt by returning (completed) or raising:

* :class:`Retryable` — the attempt failed but another may succeed (a timeout,
  a 503); the task service retries per the step's retry policy;
* :class:`NonRetryable` — no attempt will succeed (invalid card, 404); the step
  fails at once and the workflow's ``catch`` / compensation decides;
* anything else — a bug or an unexpected condition; reported as retryable with
  code ``worker.exception`` (configurable on the :class:`~headrace.sdk.Worker`)
  and the exception's type and traceback tail in the details.

Codes are short dotted strings the workflow can match in ``catch``
(``payment.declined``, ``http.5xx``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

UNHANDLED_CODE = "worker.exception"
_TRACEBACK_CHARS = 2000


class TaskError(Exception):
    """Base of the failures a handler raises on purpose; use a subclass."""

    retryable: bool = True

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        if not code:
            raise ValueError("a task failure needs a code, e.g. 'payment.declined'")
        self.code = code
        self.message = message
        self.details = dict(details or {})
        if retry_after_ms is not None:
            # A hint for the task service's backoff; it travels in the details.
            self.details["retry_after_ms"] = max(0, int(retry_after_ms))


class Retryable(TaskError):
    """This attempt failed; a later one may succeed (retried per the step's policy)."""

    retryable = True


class NonRetryable(TaskError):
    """No attempt can succeed; the step fails now (its ``catch`` handlers decide)."""

    retryable = False

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, details=details)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt as it goes on the wire."""

    code: str
    message: str
    retryable: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def retry_after_ms(self) -> int | None:
        value = self.details.get("retry_after_ms")
        return value if isinstance(value, int) else None


def failure_of(exc: BaseException, unhandled_code: str = UNHANDLED_CODE) -> Failure:
    """The failure an exception raised by a handler stands for."""
    if isinstance(exc, TaskError):
        return Failure(exc.code, exc.message, exc.retryable, exc.details)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Failure(
        unhandled_code,
        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        True,
        {
            "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "traceback": tb[-_TRACEBACK_CHARS:],
        },
    )
