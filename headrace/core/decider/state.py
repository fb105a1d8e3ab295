"""A run's state: what :func:`evolve` builds from events and :func:`decide` reads.

The state is a plain, mutable object owned by one run worker; ``to_bytes`` /
``from_bytes`` give its snapshot, which the orchestrator writes on every
decision. The snapshot is deterministic — the same state always gives the
same bytes, and replaying a run's events from :meth:`State.empty` rebuilds
byte-identical state — and cheap: a format byte, then the state's JSON-shaped
values (nested lists, dicts, str, int, float, bool, None) in ``marshal``
format version 2, which is 2-3x faster than JSON both ways here. Version 2
because later versions write back-references that depend on object identity
and reference counts (not deterministic). It is a cache, never the truth: a
snapshot that does not load (other format, other Python) is rebuilt by
replaying the run's events.
"""

from __future__ import annotations

import marshal
from typing import Any

from headrace.core.envelope import ZERO_HASH

FORMAT = 1
_MARSHAL_VERSION = 2

# Flow status
READY = 1  # positioned at `step`, not started yet (also: held while the run is suspended)
ACTIVE = 2  # `step` started, waiting for something (a task, a timer, child flows, ...)
ENDED = 3  # ran off its last step; the owner collects it in the same decision
FAILED = 4  # its step failed and nothing caught it; the owner collects it

# Flow kinds
ROOT = "r"
BRANCH = "b"
ITERATION = "i"
COMPENSATION = "c"

ROOT_ID = ""
COMPENSATION_ID = "~"

# Run status
NEW = ""
RUNNING = "running"
COMPENSATING = "compensating"
COMPLETED = "completed"
FAILED_RUN = "failed"
CANCELLED = "cancelled"
TERMINATED = "terminated"
TERMINAL = frozenset({COMPLETED, FAILED_RUN, CANCELLED, TERMINATED})

RECENT_MAX = 64  # command ids remembered for commands that address nothing pending


class Flow:
    """One thread of control: the root flow, a parallel branch, a foreach
    iteration, or the compensation in progress. It is at one step at a time;
    ``sub`` holds that step's working state (task id, attempt, join progress...)."""

    __slots__ = (
        "data",
        "id",
        "key",
        "kind",
        "owner",
        "parent",
        "status",
        "step",
        "sub",
        "tag",
        "vars",
        "visits",
    )

    def __init__(
        self,
        id: str,
        kind: str,
        step: str | None,
        data: Any,
        *,
        parent: str | None = None,
        owner: str | None = None,
        tag: Any = None,
        key: str = "",
        vars: dict[str, Any] | None = None,
        status: int = READY,
        visits: dict[str, int] | None = None,
        sub: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        self.parent = parent  # parent flow id
        self.owner = owner  # the parallel/foreach step (in the parent flow) this flow serves
        self.tag = tag  # branch name, iteration index, or compensation entry index
        self.data = data
        self.step = step
        self.status = status
        self.visits: dict[str, int] = visits if visits is not None else {}
        self.key = key  # idempotency-key suffix: iteration indexes and repeat visits
        self.vars = vars  # {"index", "item"} inside a foreach iteration
        self.sub: dict[str, Any] = sub if sub is not None else {}

    def to_list(self) -> list[Any]:
        return [
            self.id,
            self.kind,
            self.parent,
            self.owner,
            self.tag,
            self.data,
            self.step,
            self.status,
            self.visits,
            self.key,
            self.vars,
            self.sub,
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> Flow:
        f = _new_flow(cls)
        (
            f.id,
            f.kind,
            f.parent,
            f.owner,
            f.tag,
            f.data,
            f.step,
            f.status,
            f.visits,
            f.key,
            f.vars,
            f.sub,
        ) = v
        return f

    def __repr__(self) -> str:
        return f"Flow({self.id!r}, step={self.step!r}, status={self.status})"


_new_flow = object.__new__


class State:
    """Everything the decider knows about one run."""

    __slots__ = (
        "comp",
        "flows",
        "input",
        "last_hash",
        "last_seq",
        "outcome",
        "parent",
        "pending",
        "ready",
        "recent",
        "run_id",
        "spawned",
        "status",
        "suspended",
        "tenant",
        "time",
        "unwind",
        "wtype",
        "wversion",
    )

    def __init__(self) -> None:
        self.tenant = ""
        self.run_id = ""
        self.wtype = ""
        self.wversion = 0
        self.status = NEW
        self.suspended = False
        self.time = 0  # logical time, epoch ms; never goes backwards
        self.last_seq = 0
        self.last_hash = ZERO_HASH
        self.input: Any = None
        self.parent: dict[str, Any] | None = None  # who called us, for ChildFinished
        self.flows: dict[str, Flow] = {}
        # what the run waits for, by id (task id, timer id, wait id, approval id,
        # child run id) → [flow id, purpose]; commands addressing anything else are stale
        self.pending: dict[str, list[str]] = {}
        self.comp: list[list[Any]] = []  # [step, compensation step, data] in completion order
        self.unwind: dict[str, Any] | None = None  # compensation in progress
        self.recent: list[str] = []
        self.spawned: list[str] = []  # spawned children to cancel with the run (cascade)
        self.outcome: Any = None  # result of a completed run, error of a failed one
        # transient, set only while a decision runs: flows that became READY in it
        self.ready: list[str] | None = None

    @classmethod
    def empty(cls) -> State:
        return cls()

    @property
    def started(self) -> bool:
        return self.status != NEW

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def root(self) -> Flow | None:
        return self.flows.get(ROOT_ID)

    def seal(self, last_hash: bytes) -> None:
        """Record the hash of the last event once the orchestrator has sealed it."""
        self.last_hash = last_hash

    def to_bytes(self) -> bytes:
        return bytes((FORMAT,)) + marshal.dumps(
            [
                self.tenant,
                self.run_id,
                self.wtype,
                self.wversion,
                self.status,
                self.suspended,
                self.time,
                self.last_seq,
                self.last_hash.hex(),
                self.input,
                self.parent,
                [f.to_list() for f in self.flows.values()],
                self.pending,
                self.comp,
                self.unwind,
                self.recent,
                self.spawned,
                self.outcome,
            ],
            _MARSHAL_VERSION,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> State:
        """Load a snapshot; ``ValueError`` if it is not one this code wrote (replay instead)."""
        if not raw or raw[0] != FORMAT:
            raise ValueError(
                f"run snapshot format {raw[:1].hex() or 'empty'} is not {FORMAT:02x}; "
                "rebuild the state by replaying the run's events"
            )
        try:
            v = marshal.loads(memoryview(raw)[1:])
        except (EOFError, ValueError, TypeError) as exc:
            raise ValueError(
                f"run snapshot does not load ({exc}); replay the run's events"
            ) from None
        st = cls()
        (
            st.tenant,
            st.run_id,
            st.wtype,
            st.wversion,
            st.status,
            st.suspended,
            st.time,
            st.last_seq,
            last_hash,
            st.input,
            st.parent,
            flows,
            st.pending,
            st.comp,
            st.unwind,
            st.recent,
            st.spawned,
            st.outcome,
        ) = v
        st.last_hash = bytes.fromhex(last_hash)
        st.flows = {f[0]: Flow.from_list(f) for f in flows}
        return st

    def clone(self) -> State:
        return State.from_bytes(self.to_bytes())

    def __repr__(self) -> str:
        return (
            f"State({self.tenant}/{self.run_id} {self.wtype}@{self.wversion} "
            f"{self.status or 'new'} seq={self.last_seq} flows={list(self.flows)})"
        )
