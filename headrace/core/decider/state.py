"""A run's state: what :func:`evolve` builds from events and :func:`decide` reads.

The state is a plain, mutable object owned by one run worker; ``to_bytes`` /
``from_bytes`` give its snapshot, which the orchestrator writes on every
decision. The snapshot is deterministic — the same state always gives the
same bytes, and replaying a run's events from :meth:`State.empty` rebuilds
byte-identical state — and cheap: a format byte, then the state's JSON-shaped
values (nested lists, dicts, str, int, float, bool, None; bytes) in ``marshal``
format version 2, which is 2-3x faster than JSON both ways here. Version 2
because later versions write back-references that depend on object identity
and reference counts (not deterministic). It is a cache, never the truth: a
snapshot that does not load (other format, other Python) is rebuilt by
replaying the run's events.

Each flow is marshalled on its own, and the snapshot holds those segments
as opaque bytes. A decision touches a few flows of a run that may have
hundreds (a wide ``parallel`` or ``foreach``), so :meth:`State.from_bytes`
does not decode the flows: each is a :class:`PackedFlow` holding its segment,
which turns into a plain :class:`Flow` the first time anything reads or
writes it — and :meth:`State.to_bytes` writes the segment of a flow still
packed as it is. A flow therefore costs its decoding and encoding only in
the decisions that touch it, and a segment is reused only while nothing can
have changed the flow.
"""

from __future__ import annotations

import marshal
from typing import Any

from headrace.core.envelope import ZERO_HASH

FORMAT = 2
_READABLE = frozenset({1, FORMAT})  # 1: flows inline, not as segments
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
        "_segment",  # set only on a PackedFlow: its snapshot segment
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

    _segment: bytes  # only while it is a PackedFlow

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
        cls._fill(f, v)
        return f

    @staticmethod
    def _fill(f: Flow, v: list[Any]) -> None:
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

    def __repr__(self) -> str:
        return f"Flow({self.id!r}, step={self.step!r}, status={self.status})"

    def encode(self) -> bytes:
        """The flow's snapshot segment."""
        return marshal.dumps(self.to_list(), _MARSHAL_VERSION)


class SnapshotUnreadable(ValueError):
    """A snapshot (or a flow packed in it, decoded lazily) this code cannot read:
    the run's state must be rebuilt from its events."""


class PackedFlow(Flow):
    """A flow loaded from a snapshot and not decoded yet: only its segment is set.

    The first read or write of any field decodes the segment and turns the
    object into a plain :class:`Flow` (same slots, so ``__class__`` can change),
    after which it costs nothing extra. Until then the segment is, byte for
    byte, what encoding the flow would give, so ``to_bytes`` reuses it. The
    fields are properties that unpack (set below): cheaper than ``__getattr__``,
    which Python reaches only after raising an AttributeError.
    """

    __slots__ = ()

    def unpack(self) -> Flow:
        """Decode the segment in place; the object is a plain :class:`Flow` from now on."""
        try:
            v = marshal.loads(self._segment)
        except (EOFError, ValueError, TypeError) as exc:
            raise SnapshotUnreadable(
                f"a flow of the run snapshot does not load ({exc}); replay the run's events"
            ) from None
        self.__class__ = Flow  # type: ignore[assignment]
        del self._segment
        Flow._fill(self, v)
        return self

    def encode(self) -> bytes:
        return self._segment

    def __repr__(self) -> str:
        return f"PackedFlow({len(self._segment)} bytes)"


def _unpacking(name: str) -> property:
    """What field ``name`` of a :class:`PackedFlow` is: decode, then the plain slot."""

    def get(self: PackedFlow) -> Any:
        return getattr(self.unpack(), name)

    def put(self: PackedFlow, value: Any) -> None:
        setattr(self.unpack(), name, value)

    return property(get, put)


for _name in Flow.__slots__:
    if _name != "_segment":
        setattr(PackedFlow, _name, _unpacking(_name))


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
        """The snapshot: deterministic, and replaying the run's events gives the same bytes."""
        flows = {}
        for id_, f in self.flows.items():  # most are still packed: no method call for those
            flows[id_] = f._segment if type(f) is PackedFlow else f.encode()
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
                self.last_hash,
                self.input,
                self.parent,
                flows,
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
        version = raw[0] if raw else None
        if version not in _READABLE:
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
            st.last_hash,
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
        if version == 1:  # flows inline, hash as hex: written before per-flow segments
            st.last_hash = bytes.fromhex(st.last_hash)  # type: ignore[arg-type]
            st.flows = {f[0]: Flow.from_list(f) for f in flows}
            return st
        st.flows = table = {}
        for id_, segment in flows.items():
            table[id_] = f = _new_flow(PackedFlow)
            f._segment = segment
        return st

    def clone(self) -> State:
        return State.from_bytes(self.to_bytes())

    def __repr__(self) -> str:
        return (
            f"State({self.tenant}/{self.run_id} {self.wtype}@{self.wversion} "
            f"{self.status or 'new'} seq={self.last_seq} flows={list(self.flows)})"
        )
