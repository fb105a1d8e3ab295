"""The workflow definition language: pydantic models are the source of truth.

A definition is a JSON or YAML document::

    type: order-processing
    version: 1
    input_schema: {type: object, required: [order]}
    steps:
      - name: charge
        kind: task
        queue: payments
        input: "{amount: .order.total}"
        into: payment
        retry: {max_attempts: 5, initial_backoff: 1s}
        timeouts: {start_to_close: 30s}
        compensate: refund
      - name: done
        kind: succeed
    compensations:
      - name: refund
        kind: task
        queue: payments

Steps run in list order unless a step names ``next``; a step with ``end: true``
(or the last of its list) ends its flow. ``parallel`` branches and ``foreach``
bodies are nested step lists. Every expression is jq (see
:mod:`headrace.core.expr`): ``.`` is the run data, ``$input`` the run input,
``$run`` the run's identity, and step-specific variables as documented per field.

``schemas/workflow.schema.json`` is generated from these models
(``headrace.core.dsl.schema``) and a test keeps it in sync.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.core.durations import parse_duration

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)

Expr = Annotated[str, Field(min_length=1, description="a jq expression")]
StepName = Annotated[str, Field(pattern=NAME_PATTERN, description="name of a step")]


def _duration(v: Any) -> Any:
    """Check a duration field; it stays a string (read it with ``parse_duration``)."""
    if v is None:
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(
            f"duration {v!r} has no unit — write it as a string such as '{v}s' or '{v}ms'"
        )
    parse_duration(str(v))  # raises ValueError with a clear message
    return str(v)


DurationStr = Annotated[str, Field(description="duration, e.g. '30s', '5m', '1h30m', 'PT2H'")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------------------
# shared pieces


class RetryPolicy(_Strict):
    """How a failed task attempt is retried. Backoff of attempt n (n>=1) is
    ``min(max_backoff, initial_backoff * multiplier**(n-1))``, then spread by
    ``jitter`` (a fraction: 0.2 means ±20%), seeded from the task id so that
    replays compute the same delay."""

    max_attempts: int | None = Field(
        3, ge=1, description="attempts in all, first one included; null means unbounded"
    )
    initial_backoff: DurationStr = "1s"
    max_backoff: DurationStr = "5m"
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(0.2, ge=0.0, le=1.0)
    non_retryable: list[str] = Field(
        default_factory=list, description="error codes that fail the task at once"
    )
    on_exhausted: Literal["fail", "park"] = Field(
        "fail",
        description="after the last attempt: fail the step (catch/compensation decide), or "
        "park it in the DLQ until an operator redrives it (`headrace dlq redrive`)",
    )

    _v_durations = field_validator("initial_backoff", "max_backoff", mode="before")(
        classmethod(lambda cls, v: _duration(v))
    )


class TaskTimeouts(_Strict):
    """Per-attempt time limits of a task (Temporal's names)."""

    schedule_to_start: DurationStr | None = Field(
        None, description="dispatched → picked up by a worker"
    )
    start_to_close: DurationStr | None = Field(None, description="picked up → result")
    heartbeat: DurationStr | None = Field(None, description="longest gap between heartbeats")

    _v_durations = field_validator(
        "schedule_to_start", "start_to_close", "heartbeat", mode="before"
    )(classmethod(lambda cls, v: _duration(v)))


class Catch(_Strict):
    """Route a failure of this step to another step instead of failing the flow."""

    errors: list[str] = Field(
        default_factory=lambda: ["*"],
        description="error codes to catch; '*' catches every error except cancellation",
    )
    next: StepName
    into: str | None = Field(None, description="data path that receives {code, message, step}")


class BusinessTime(_Strict):
    """A duration in a named business calendar (working hours, holidays)."""

    calendar: str = Field(min_length=1, description="name of a business calendar")
    duration: DurationStr | None = Field(
        None, description="business time, e.g. '16h' = two 8-hour days"
    )
    days: int | None = Field(None, ge=0, description="business days instead of a duration")

    _v_duration = field_validator("duration", mode="before")(
        classmethod(lambda cls, v: _duration(v))
    )

    @model_validator(mode="after")
    def _one_of(self) -> BusinessTime:
        if (self.duration is None) == (self.days is None):
            raise ValueError("business time needs exactly one of 'duration' or 'days'")
        return self


class Sla(_Strict):
    """A deadline on a run or a step; breaches and near-breaches become events."""

    within: DurationStr | None = None
    business: BusinessTime | None = None
    at_risk: float = Field(0.8, gt=0, lt=1, description="fraction of the SLA that warns")

    _v_within = field_validator("within", mode="before")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _one_of(self) -> Sla:
        if (self.within is None) == (self.business is None):
            raise ValueError("an SLA needs exactly one of 'within' or 'business'")
        return self


class ChildPolicy(StrEnum):
    """What happens to a child when its parent is cancelled or terminated."""

    CASCADE = "cascade"
    ABANDON = "abandon"


# ---------------------------------------------------------------------------
# steps


class StepBase(_Strict):
    """Fields every step kind has."""

    name: StepName = Field(description="unique across the whole definition")
    description: str | None = Field(None, description="free text for readers and UIs")
    next: StepName | None = Field(
        None, description="step to run after this one, in the same list (default: the next listed)"
    )
    end: bool = Field(False, description="this step ends its flow (run, branch or iteration)")
    catch: list[Catch] = Field(default_factory=list, description="failure handlers, tried in order")
    compensate: StepName | None = Field(
        None, description="name of a step in `compensations` that undoes this one"
    )
    sla: Sla | None = Field(None, description="deadline for this step")


_RESERVED_QUEUE_SUFFIX = re.compile(r"\.(p[0-9]|dlq)$")


def _queue_name(v: Any) -> Any:
    """Refuse queue names whose topics would be another queue's band or DLQ topic."""
    if isinstance(v, str):
        m = _RESERVED_QUEUE_SUFFIX.search(v)
        if m is not None:
            base = v[: m.start()]
            what = "the DLQ" if m.group(1) == "dlq" else f"the priority-{m.group(1)[1]} band"
            raise ValueError(
                f"queue {v!r} ends in '{m.group(0)}': its topic tasks.{v} would be {what} of "
                f"queue {base!r} — a queue name may not end in '.p<digit>' or '.dlq'; rename "
                f"it (e.g. {base + '-' + m.group(1)!r})"
            )
    return v


class TaskStep(StepBase):
    """Hand work to a domain service through ``tasks.<queue>``."""

    kind: Literal["task"]
    queue: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$",
        description="task queue: workers read `tasks.<queue>`; `http` etc. are built-in connectors",
    )
    _v_queue = field_validator("queue")(classmethod(lambda cls, v: _queue_name(v)))
    input: Expr | None = Field(None, description="jq over run data → task input (default `.`)")
    output: Expr | None = Field(None, description="jq over the result (`.`), `$data` = run data")
    into: str | None = Field(None, description="data path for the (mapped) result")
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="retries of failed attempts"
    )
    timeouts: TaskTimeouts = Field(default_factory=TaskTimeouts, description="per-attempt limits")
    priority: int = Field(5, ge=0, le=9, description="0 lowest … 9 highest")
    idempotency_key: Expr | None = Field(
        None, description="jq → string; default '<run_id>/<step>[/<iteration>]'"
    )
    idempotent: bool = Field(
        True, description="the service applies a repeated request once (honours the key)"
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="connector settings (e.g. method/url for `http`)"
    )


class ChoiceRule(_Strict):
    """One guarded branch of a choice."""

    when: Expr = Field(description="jq guard; truthy selects `next`")
    next: StepName


class ChoiceStep(StepBase):
    """Go to the first step whose guard holds, else ``default``."""

    kind: Literal["choice"]
    choices: list[ChoiceRule] = Field(min_length=1, description="tried in order")
    default: StepName | None = Field(None, description="step when no guard holds (else fail)")


class JoinMode(StrEnum):
    ALL = "all"
    ANY = "any"
    N_OF_M = "n_of_m"


class Join(_Strict):
    """When a parallel step is done: all branches, the first, or n of them."""

    mode: JoinMode = JoinMode.ALL
    n: int | None = Field(None, ge=1, description="branches needed for `n_of_m`")

    @model_validator(mode="after")
    def _n(self) -> Join:
        if self.mode is JoinMode.N_OF_M and self.n is None:
            raise ValueError("join mode 'n_of_m' needs 'n' (how many branches must succeed)")
        if self.mode is not JoinMode.N_OF_M and self.n is not None:
            raise ValueError(f"'n' only applies to join mode 'n_of_m', not '{self.mode}'")
        return self


class BranchFailure(StrEnum):
    """What a failed branch does to its parallel step."""

    FAIL = "fail"  # fail the parallel step at once, cancel the other branches
    IGNORE = "ignore"  # record the error as the branch's result, keep joining
    WAIT = "wait"  # let the others finish, then fail if the join cannot be met


class Branch(_Strict):
    """One branch of a parallel step: its own flow of steps."""

    name: StepName = Field(description="key of this branch's result")
    steps: list[Step] = Field(min_length=1)


class ParallelStep(StepBase):
    """Run named branches at once, each on its own copy of the data; join them.

    The step's result is ``{branch_name: branch's final data}`` of the branches
    that completed; ``output``/``into`` place it (default: each branch's final
    data shallow-merged into the run data in declaration order)."""

    kind: Literal["parallel"]
    branches: list[Branch] = Field(min_length=1)
    join: Join = Field(default_factory=Join)
    on_branch_failure: BranchFailure = BranchFailure.FAIL
    output: Expr | None = Field(None, description="jq over {branch: data}, `$data` = run data")
    into: str | None = Field(None, description="data path for the (mapped) result")


class ForeachStep(StepBase):
    """Run ``steps`` once per item of a list, at most ``concurrency`` at a time.

    Each iteration starts from a copy of the run data with ``.[as] = item`` and
    ``$index``; its result is its final data, or ``collect`` applied to it.
    Results are gathered in item order into ``into``."""

    kind: Literal["foreach"]
    items: Expr = Field(description="jq → the list to fan out over")
    as_: str = Field(
        "item",
        alias="as",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="data key (and variable) that holds the current item",
    )
    concurrency: int = Field(10, ge=1, le=10_000, description="iterations running at once")
    steps: list[Step] = Field(min_length=1, description="the body, run once per item")
    collect: Expr | None = Field(None, description="jq over an iteration's final data")
    into: str | None = Field(None, description="data path for the list of results")
    on_item_failure: BranchFailure = BranchFailure.FAIL


class WaitStep(StepBase):
    """Pause for a duration, until a time, or for business time."""

    kind: Literal["wait"]
    duration: DurationStr | None = Field(None, description="how long to pause")
    until: Expr | None = Field(None, description="jq → ISO 8601 time or epoch milliseconds")
    business: BusinessTime | None = Field(None, description="pause for business time")

    _v_duration = field_validator("duration", mode="before")(
        classmethod(lambda cls, v: _duration(v))
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitStep:
        given = [k for k in ("duration", "until", "business") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a wait step needs exactly one of 'duration', 'until' or 'business'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class WaitSignalStep(StepBase):
    """Wait for a named signal addressed to this run or to a correlation key."""

    kind: Literal["wait_signal"]
    signal: str = Field(min_length=1, description="signal name")
    correlation: Expr | None = Field(None, description="jq → correlation key (default: run id)")
    timeout: DurationStr | None = Field(None, description="give up waiting after this long")
    on_timeout: StepName | None = Field(None, description="step after a timeout (else fail)")
    output: Expr | None = Field(None, description="jq over the signal data")
    into: str | None = Field(None, description="data path for the (mapped) signal data")

    _v_timeout = field_validator("timeout", mode="before")(classmethod(lambda cls, v: _duration(v)))


class Quorum(StrEnum):
    SERIAL = "serial"  # each assignee in the listed order
    PARALLEL = "parallel"  # every assignee
    THRESHOLD = "threshold"  # k of n


class Reminders(_Strict):
    """Nudge assignees who have not decided yet."""

    every: DurationStr = Field(description="interval between reminders")
    calendar: str | None = Field(None, description="count `every` in business time")
    max: int | None = Field(None, ge=1, description="stop after this many")

    _v_every = field_validator("every", mode="before")(classmethod(lambda cls, v: _duration(v)))


class StepUp(_Strict):
    """How fresh the second factor on a decision must be (``step_up: true`` means the defaults)."""

    max_age: DurationStr = Field("5m", description="oldest second factor accepted")
    methods: list[str] = Field(
        default_factory=list,
        description="accepted methods (e.g. otp, webauthn, the IdP's `amr` values); empty: any",
    )

    _v_max_age = field_validator("max_age", mode="before")(classmethod(lambda cls, v: _duration(v)))


class ApprovalStep(StepBase):
    """A human decision with a quorum."""

    kind: Literal["approval"]
    assignees: list[str] = Field(default_factory=list, description="users, in order for serial")
    roles: list[str] = Field(default_factory=list, description="anyone with one of these roles")
    assignees_from: Expr | None = Field(None, description="jq → list of users, at run time")
    quorum: Quorum = Field(Quorum.PARALLEL, description="serial, parallel (all) or threshold")
    threshold: int | None = Field(None, ge=1, description="k for quorum 'threshold'")
    veto: bool = Field(False, description="one rejection rejects at once")
    delegation: bool = Field(False, description="assignees may hand their decision on")
    step_up: bool | StepUp = Field(
        False, description="decisions need a fresh second factor (true, or {max_age, methods})"
    )
    expiry: DurationStr | None = Field(None, description="undecided after this long → escalation")
    expiry_business: BusinessTime | None = Field(None, description="expiry in business time")
    escalation: StepName | None = Field(None, description="step to run when it expires")
    escalate_to_role: str | None = Field(
        None, description="on expiry, re-assign to this role instead of moving on"
    )
    reminders: Reminders | None = None
    on_reject: StepName | None = Field(None, description="step after a rejection (else fail)")
    into: str | None = Field(None, description="data path for the decisions")
    form: dict[str, Any] | None = Field(None, description="JSON Schema of extra decision data")

    _v_expiry = field_validator("expiry", mode="before")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _quorum(self) -> ApprovalStep:
        if not (self.assignees or self.roles or self.assignees_from):
            raise ValueError("an approval needs 'assignees', 'roles' or 'assignees_from'")
        if self.quorum is Quorum.THRESHOLD and self.threshold is None:
            raise ValueError("quorum 'threshold' needs 'threshold' (k approvals of n)")
        if self.quorum is Quorum.SERIAL and not self.assignees:
            raise ValueError("quorum 'serial' needs an ordered 'assignees' list")
        if self.expiry is not None and self.expiry_business is not None:
            raise ValueError("give 'expiry' or 'expiry_business', not both")
        return self


class CallStep(StepBase):
    """Start a child workflow and wait for its result."""

    kind: Literal["call"]
    workflow: str = Field(pattern=TYPE_PATTERN, description="the child's workflow type")
    version: int | None = Field(None, ge=1, description="default: latest at the time of the call")
    input: Expr | None = Field(None, description="jq over run data → the child's input")
    output: Expr | None = Field(None, description="jq over the child's result, `$data` = run data")
    into: str | None = Field(None, description="data path for the (mapped) result")
    on_parent_cancel: ChildPolicy = Field(
        ChildPolicy.CASCADE, description="cancel the child with the parent, or let it run"
    )


class SpawnStep(StepBase):
    """Start a child workflow and go on without waiting."""

    kind: Literal["spawn"]
    workflow: str = Field(pattern=TYPE_PATTERN, description="the child's workflow type")
    version: int | None = Field(None, ge=1, description="default: latest at the time of the call")
    input: Expr | None = Field(None, description="jq over run data → the child's input")
    into: str | None = Field(None, description="data path for the child's run id")
    on_parent_cancel: ChildPolicy = Field(
        ChildPolicy.ABANDON, description="cancel the child with the parent, or let it run"
    )


class SetStep(StepBase):
    """Transform the run data: ``value`` is jq over the data."""

    kind: Literal["set"]
    value: Expr = Field(description="jq over the run data")
    into: str | None = Field(None, description="data path (default: replace the data)")


class SucceedStep(StepBase):
    """End the run (or branch) successfully; ``output`` is jq → the run's result."""

    kind: Literal["succeed"]
    output: Expr | None = Field(None, description="jq over the data → the result")


class FailStep(StepBase):
    """End the flow with an error (catchable by an enclosing step's ``catch``)."""

    kind: Literal["fail"]
    error: str = Field(min_length=1, description="error code")
    message: str | None = Field(None, description="text; `${ jq }` parts are interpolated")


Step = Annotated[
    TaskStep
    | ChoiceStep
    | ParallelStep
    | ForeachStep
    | WaitStep
    | WaitSignalStep
    | ApprovalStep
    | CallStep
    | SpawnStep
    | SetStep
    | SucceedStep
    | FailStep,
    Field(discriminator="kind"),
]

Branch.model_rebuild()
ForeachStep.model_rebuild()


# ---------------------------------------------------------------------------
# the definition


class Trigger(_Strict):
    """Start a run when a CloudEvent of ``event_type`` arrives on ``ingress``."""

    event_type: str = Field(min_length=1, description="CloudEvent `type` attribute")
    source: str | None = Field(None, description="only events from this `source`")
    filter: Expr | None = Field(None, description="jq over the CloudEvent (data in `.data`)")
    input: Expr | None = Field(None, description="jq over the CloudEvent → run input")
    run_id: Expr | None = Field(None, description="jq → run id (default: derived from id)")


class Definition(_Strict):
    """A workflow type at one version. ``type@version`` is immutable once deployed."""

    type: str = Field(pattern=TYPE_PATTERN, description="workflow type, e.g. 'order-processing'")
    version: int = Field(ge=1, description="version of this type; deployed versions never change")
    description: str | None = Field(None, description="free text for readers and UIs")
    input_schema: dict[str, Any] | None = Field(None, description="JSON Schema of the input")
    start: StepName | None = Field(None, description="first step (default: the first listed)")
    steps: list[Step] = Field(min_length=1, description="the main flow")
    compensations: list[Step] = Field(
        default_factory=list, description="steps only reached through `compensate`"
    )
    triggers: list[Trigger] = Field(
        default_factory=list, description="CloudEvents that start a run"
    )
    timeout: DurationStr | None = Field(None, description="the whole run's deadline")
    sla: Sla | None = Field(None, description="deadline for the whole run")
    on_cancel: Literal["compensate", "none"] = Field(
        "compensate", description="run completed steps' compensations on cancel"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free key/value tags")

    _v_timeout = field_validator("timeout", mode="before")(classmethod(lambda cls, v: _duration(v)))

    @property
    def key(self) -> str:
        return f"{self.type}@{self.version}"


def is_valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))
