"""Built-in step error codes, and how ``catch`` matches them.

A step that fails records an error ``{code, message, step[, details]}``. Codes
raised by the engine itself are short and stable (use them in ``catch``):

=====================  ==================================================================
``task.exhausted``     a task used all its attempts (``details.last_error`` has the last one)
``timeout``            a task attempt timed out and ``timeout`` is in ``retry.non_retryable``;
                       also the run error of a run that hit its ``timeout``
``child.failed``       a ``call``-ed child run failed, was cancelled or terminated
                       (``details.status``, ``details.error``)
``approval.rejected``  an approval was rejected and the step has no ``on_reject``
``approval.expired``   an approval expired and the step has no ``escalation``
``signal.timeout``     a ``wait_signal`` timed out and the step has no ``on_timeout``
``expression.failed``  a jq expression failed at run time, returned the wrong type, or a
                       result could not be placed at its ``into`` path
``choice.unmatched``   no rule of a ``choice`` held and it has no ``default``
``join.unmet``         a ``parallel``/``foreach`` whose failure mode is ``wait`` finished
                       without meeting its join (``details.failures``)
``cancelled``          the run was cancelled (run-level; ``'*'`` never catches it)
``input.invalid``      the run input does not match ``input_schema`` (run-level)
``loop.limit``         one command drove more than 10,000 steps: a loop without a wait
                       (run-level, not catchable, no compensation)
``definition.invalid`` a transfer names a step that does not exist (a definition that
                       skipped validation)
=====================  ==================================================================

Any other code comes from where the failure came from: a worker's error code
when a task fails with a code listed in ``retry.non_retryable`` or reported as
not retryable, or the ``error`` of a ``fail`` step. A ``parallel`` whose
``on_branch_failure`` is ``fail`` (and a ``foreach`` likewise) fails with the
error of the branch or iteration that failed, so a ``catch`` on the container
sees the original code.

``catch.errors`` entries match a code exactly, ``'prefix.*'`` matches every
code under ``prefix.``, and ``'*'`` matches everything except ``cancelled``.
"""

from __future__ import annotations

from typing import Any

TASK_EXHAUSTED = "task.exhausted"
TIMEOUT = "timeout"
CHILD_FAILED = "child.failed"
APPROVAL_REJECTED = "approval.rejected"
APPROVAL_EXPIRED = "approval.expired"
SIGNAL_TIMEOUT = "signal.timeout"
EXPRESSION_FAILED = "expression.failed"
CHOICE_UNMATCHED = "choice.unmatched"
JOIN_UNMET = "join.unmet"
CANCELLED = "cancelled"
INPUT_INVALID = "input.invalid"
LOOP_LIMIT = "loop.limit"
DEFINITION_INVALID = "definition.invalid"

BUILTIN_CODES = (
    TASK_EXHAUSTED,
    TIMEOUT,
    CHILD_FAILED,
    APPROVAL_REJECTED,
    APPROVAL_EXPIRED,
    SIGNAL_TIMEOUT,
    EXPRESSION_FAILED,
    CHOICE_UNMATCHED,
    JOIN_UNMET,
    CANCELLED,
    INPUT_INVALID,
    LOOP_LIMIT,
)  # DEFINITION_INVALID is left out: only a definition that skipped validation raises it


class StepError(Exception):
    """A step failed; raised inside the decider and turned into ``StepFailed``."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details

    def payload(self, step: str) -> dict[str, Any]:
        return error(self.code, self.message, step, self.details)


def error(
    code: str, message: str, step: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The error object recorded on events and placed by ``catch.into``."""
    out: dict[str, Any] = {"code": code, "message": message}
    if step is not None:
        out["step"] = step
    if details:
        out["details"] = details
    return out


def catches(pattern: str, code: str) -> bool:
    """Does a ``catch.errors`` entry match ``code``?"""
    if pattern == "*":
        return code != CANCELLED
    if pattern.endswith(".*"):
        return code.startswith(pattern[:-1])
    return pattern == code
