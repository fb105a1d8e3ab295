"""Audit the whole ``events`` log: every run's chain, duplicates, forks, outcomes.

Reads every partition of ``events`` from the beginning to its current end and
checks DESIGN.md's invariants for each run: the chain verifies, ``seq`` is
gap-free from 1 with no fork, and any repeated event is a byte-identical
redelivery (collapsed and counted). The reliability tests use it after their
kills; operators can run it as ``headrace audit``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from headrace.core.chain import ChainReport, verify
from headrace.core.codec import decode_event
from headrace.core.envelope import EventType
from headrace.errors import HeadraceError
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

TERMINAL = {
    EventType.RunCompleted: "completed",
    EventType.RunFailed: "failed",
    EventType.RunCancelled: "cancelled",
    EventType.RunTerminated: "terminated",
}


@dataclass(slots=True)
class RunAudit:
    """What the log says about one run."""

    key: str
    report: ChainReport
    status: str  # completed | failed | cancelled | terminated | running
    steps_completed: Counter[str] = field(default_factory=Counter)
    partitions: set[int] = field(default_factory=set)


@dataclass(slots=True)
class AuditReport:
    runs: dict[str, RunAudit]
    records: int
    undecodable: int

    @property
    def broken(self) -> list[RunAudit]:
        return [r for r in self.runs.values() if not r.report.ok]

    @property
    def duplicates(self) -> int:
        return sum(r.report.duplicates for r in self.runs.values())

    def by_status(self) -> Counter[str]:
        return Counter(r.status for r in self.runs.values())

    def summary(self) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status().items()))
        return (
            f"{len(self.runs)} runs ({statuses}); {self.records} records; "
            f"{self.duplicates} byte-identical duplicates collapsed; "
            f"{len(self.broken)} broken chains; {self.undecodable} undecodable records"
        )


def audit_events(settings: Settings, *, tenant: str | None = None) -> AuditReport:
    """Read every partition of ``events`` and audit each run (of ``tenant``, if given)."""
    per_run: dict[str, list[bytes]] = defaultdict(list)
    parts: dict[str, set[int]] = defaultdict(set)
    records = 0
    undecodable = 0
    for p in range(settings.partitions):
        for rec in read_partition(settings.bootstrap, settings.topics.events, p, 0):
            if rec.value is None:
                continue
            records += 1
            key = rec.key.decode("utf-8", "replace") if rec.key else ""
            if tenant is not None and not key.startswith(f"{tenant}/"):
                continue
            per_run[key].append(rec.value)
            parts[key].add(p)
    runs: dict[str, RunAudit] = {}
    for key, raws in per_run.items():
        report = verify(raws)
        status = "running"
        steps: Counter[str] = Counter()
        seen: set[int] = set()
        for raw in raws:
            try:
                ev = decode_event(raw)
            except HeadraceError:
                undecodable += 1
                continue
            if ev.seq in seen:
                continue  # a redelivery; verify() already judged it
            seen.add(ev.seq)
            if ev.type in TERMINAL:
                status = TERMINAL[ev.type]
            elif ev.type is EventType.StepCompleted:
                steps[str(ev.payload.get("step"))] += 1
        runs[key] = RunAudit(key, report, status, steps, parts[key])
    return AuditReport(runs, records, undecodable)
