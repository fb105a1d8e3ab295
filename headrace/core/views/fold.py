"""Fold one event into every view it touches, and a run's whole log at once.

The two-step protocol a store follows per event: ask :func:`approval_refs`
which approval records the event touches (given the run view as it is),
load those, then call :func:`fold_event`, which returns everything to write
back — or ``None`` when the event is already reflected (a redelivery).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headrace.core.envelope import Event
from headrace.core.views.approvals import approval_refs, fold_approval
from headrace.core.views.runs import fold_run, new_run


@dataclass(slots=True)
class Folded:
    """What one event changed."""

    run: dict[str, Any]
    status_before: str | None  # None: the event created the run view
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


def fold_event(
    run: dict[str, Any] | None,
    approvals: Mapping[str, dict[str, Any] | None],
    event: Event,
) -> Folded | None:
    """Fold ``event`` into ``run`` (in place; a new view when None) and the given
    approval records (``approval_refs(run, event)`` → record or None)."""
    before = None if run is None else run["status"]
    view = new_run(event) if run is None else run
    if event.seq <= view["last_seq"]:
        return None
    touched: dict[str, dict[str, Any]] = {}
    for aid, record in approvals.items():
        after = fold_approval(record, event)
        if after is not None and after is not record:
            touched[aid] = after
    samples = fold_run(view, event)
    assert samples is not None  # seq checked above
    return Folded(view, before, touched, samples)


@dataclass(slots=True)
class RunViews:
    """All views of one run, folded from its events in memory (tests, tools)."""

    run: dict[str, Any] | None = None
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def fold(self, event: Event) -> bool:
        """Fold one event; False if it was already reflected."""
        refs = approval_refs(self.run, event)
        folded = fold_event(self.run, {a: self.approvals.get(a) for a in refs}, event)
        if folded is None:
            return False
        self.run = folded.run
        self.approvals.update(folded.approvals)
        self.samples.extend(folded.samples)
        return True

    def fold_all(self, events: Iterable[Event]) -> RunViews:
        for event in events:
            self.fold(event)
        return self
