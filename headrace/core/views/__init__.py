"""Query-side views folded from Canonical Workflow Events (pure: no Kafka, no storage).

Three views, each a plain JSON document, each idempotent on ``(run, seq)`` so
that at-least-once redeliveries collapse:

* the **run summary** (:mod:`.runs`) — status, timing, parent and children,
  input, data and outcome, active steps, the last operator actions;
* the **approval record** (:mod:`.approvals`) — who may decide, the quorum,
  the decisions so far, pending or how it ended;
* **step samples** (:mod:`.runs`, summarised by :mod:`.stats`) — one duration
  per step that ended, for SLA reports and breach predictions.

The query API (``headrace.services.api``) stores them in RocksDB; anyone
else holding the ``events`` topic can fold the same views with these functions.
"""

from headrace.core.views.approvals import (
    APPROVAL_STATUSES,
    approval_refs,
    fold_approval,
    may_decide,
)
from headrace.core.views.fold import Folded, RunViews, fold_event
from headrace.core.views.runs import (
    ACTIVE,
    STATUSES,
    TERMINAL,
    fold_run,
    new_run,
    run_document,
    run_row,
)
from headrace.core.views.stats import percentile, summarize

__all__ = [
    "ACTIVE",
    "APPROVAL_STATUSES",
    "STATUSES",
    "TERMINAL",
    "Folded",
    "RunViews",
    "approval_refs",
    "fold_approval",
    "fold_event",
    "fold_run",
    "may_decide",
    "new_run",
    "percentile",
    "run_document",
    "run_row",
    "summarize",
]
