"""The error taxonomy: every error headrace raises or records carries a code.

Codes are stable strings (``HR-<AREA>-<NNN>``) that appear in logs, DLQ headers,
events and CLI output, so operators can search for them. Each code says whether
retrying the same operation can succeed.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    """``(code, retryable, meaning)``."""

    # configuration and environment
    CONFIG_INVALID = ("HR-CFG-001", False, "settings or config file invalid")
    DEPENDENCY_MISSING = ("HR-CFG-002", False, "a required program (java, mvn) is missing")
    PORT_IN_USE = ("HR-CFG-003", False, "a port headrace needs is taken")
    DOWNLOAD_FAILED = ("HR-CFG-004", True, "fetching an artifact failed")
    # Kafka
    KAFKA_UNAVAILABLE = ("HR-KAF-001", True, "the Kafka cluster cannot be reached")
    KAFKA_TIMEOUT = ("HR-KAF-002", True, "a Kafka operation timed out")
    KAFKA_PRODUCE_FAILED = ("HR-KAF-003", True, "a produce was not acknowledged")
    TOPIC_MISMATCH = ("HR-KAF-004", False, "a topic exists with other settings")
    # wire formats
    DECODE_FAILED = ("HR-WIRE-001", False, "a message could not be decoded")
    ENCODE_FAILED = ("HR-WIRE-005", False, "a message could not be encoded")
    UNKNOWN_SCHEMA = ("HR-WIRE-002", False, "a message names a schema fingerprint we lack")
    CHAIN_BROKEN = ("HR-WIRE-003", False, "a run's hash chain does not verify")
    BAD_CLOUDEVENT = ("HR-WIRE-004", False, "not a valid CloudEvent")
    UNROUTABLE = ("HR-WIRE-006", False, "an ingress event matches no route and no trigger")
    # definitions and input
    DEFINITION_INVALID = ("HR-DEF-001", False, "a workflow definition is invalid")
    DEFINITION_NOT_FOUND = ("HR-DEF-002", False, "no such workflow type/version")
    DEFINITION_CONFLICT = ("HR-DEF-003", False, "type@version exists with another body")
    EXPRESSION_INVALID = ("HR-DEF-004", False, "an expression does not compile or is unsafe")
    EXPRESSION_FAILED = ("HR-DEF-005", False, "an expression failed at run time")
    INPUT_INVALID = ("HR-RUN-001", False, "input fails the definition's input schema")
    RUN_NOT_FOUND = ("HR-RUN-002", False, "no such run")
    COMMAND_REJECTED = ("HR-RUN-003", False, "a command does not apply to the run's state")
    DRAINING = ("HR-RUN-004", True, "the workflow type or tenant is draining")
    # approvals
    APPROVAL_NOT_FOUND = ("HR-APR-001", False, "no such approval request")
    APPROVAL_CLOSED = ("HR-APR-002", False, "the approval request is no longer pending")
    APPROVAL_REFUSED = ("HR-APR-003", False, "the engine refused the decision (recorded)")
    STEP_UP_FAILED = ("HR-APR-004", False, "no valid step-up claim for the decision")
    # tasks
    TASK_FAILED = ("HR-TASK-001", True, "a task attempt failed")
    TASK_TIMED_OUT = ("HR-TASK-002", True, "a task attempt timed out")
    TASK_EXHAUSTED = ("HR-TASK-003", False, "a task used all its attempts")
    DLQ_ENTRY_NOT_FOUND = ("HR-TASK-004", False, "no such entry in the task DLQs")
    # services talking to each other
    API_UNAVAILABLE = ("HR-API-001", True, "the query API cannot be reached or answered wrongly")
    API_BAD_REQUEST = ("HR-API-002", False, "a request to the query API is malformed")
    VIEW_BEHIND = ("HR-API-003", True, "the query views did not catch up in time")
    INTERNAL = ("HR-INT-001", False, "a bug in headrace; please report it")

    def __init__(self, code: str, retryable: bool, meaning: str) -> None:
        self.code = code
        self.retryable = retryable
        self.meaning = meaning

    @classmethod
    def from_code(cls, code: str) -> ErrorCode:
        for member in cls:
            if member.code == code:
                return member
        raise KeyError(code)


class HeadraceError(Exception):
    """An error with a taxonomy code; the message says what, to what, and what to do."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = code.retryable if retryable is None else retryable

    def __str__(self) -> str:
        return f"[{self.code.code}] {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code.code, "message": self.message, "retryable": self.retryable}
