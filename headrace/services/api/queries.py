"""Queries over the :class:`~headrace.services.api.store.ViewStore`: lists, counts, statistics.

Lists page through an index in key order; a page's ``next`` cursor is the
last index key it looked at (opaque, base64url), so paging is stable while
views change: a run that moves to another status between pages is seen in
its new place if that comes later, never twice in one status. A page stops
after ``limit`` matches or after scanning ``budget`` index entries, whichever
comes first — with a selective ``filter`` a page may be short, and only an
absent ``next`` means the end.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from headrace.core.views import ACTIVE, STATUSES, TERMINAL, may_decide, run_row, summarize
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api import store as keys
from headrace.services.api.store import SEP, ViewStore

SCAN_BUDGET = 10_000  # index entries one page of a list reads at most
SAMPLE_BUDGET = 200_000  # step samples one statistics request reads at most
ALIASES = {"active": sorted(ACTIVE), "terminal": sorted(TERMINAL)}


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None


def encode_cursor(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> bytes | None:
    if not cursor:
        return None
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise HeadraceError(
            ErrorCode.API_BAD_REQUEST,
            f"cursor {cursor!r} is not one this API gave out — start again without it",
        ) from None


def parse_statuses(
    raw: str | None,
    known: tuple[str, ...] = STATUSES,
    aliases: dict[str, list[str]] | None = None,
) -> list[str] | None:
    """``running,suspended`` or an alias (runs: ``active``, ``terminal``) → sorted statuses."""
    if not raw:
        return None
    aliases = ALIASES if aliases is None and known == STATUSES else (aliases or {})
    out: set[str] = set()
    for part in (p.strip() for p in raw.split(",")):
        if part in aliases:
            out.update(aliases[part])
        elif part in known:
            out.add(part)
        else:
            names = ", ".join([*known, *aliases])
            raise HeadraceError(
                ErrorCode.API_BAD_REQUEST, f"unknown status {part!r}; use one of {names}"
            )
    return sorted(out)


def _walk(
    store: ViewStore, prefixes: list[bytes], after: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """Index entries under each prefix (in order), resuming strictly after ``after``."""
    for prefix in sorted(prefixes):
        if after is not None and not after.startswith(prefix) and after > prefix:
            continue  # the whole range lies before the cursor
        resume = after if after is not None and after.startswith(prefix) else None
        yield from store.scan(prefix, resume)


def _page(
    entries: Iterator[tuple[bytes, bytes]],
    load: Callable[[bytes, bytes], dict[str, Any] | None],
    keep: Callable[[dict[str, Any]], bool],
    limit: int,
    budget: int,
) -> Page:
    items: list[dict[str, Any]] = []
    last: bytes | None = None
    for scanned, (key, value) in enumerate(entries, 1):
        last = key
        item = load(key, value)
        if item is not None and keep(item):
            items.append(item)
            if len(items) >= limit:
                break
        if scanned >= budget:
            break
    else:
        return Page(items, None)
    return Page(items, encode_cursor(last) if last is not None else None)


# -- runs -------------------------------------------------------------------------------


def list_runs(
    store: ViewStore,
    *,
    wtype: str | None = None,
    tenant: str | None = None,
    statuses: list[str] | None = None,
    match: Callable[[dict[str, Any]], bool] | None = None,
    limit: int = 100,
    cursor: str | None = None,
    full: bool = False,
    budget: int = SCAN_BUDGET,
) -> Page:
    """Runs by the best index for the filters; rows (or full views with ``full``)."""
    after = decode_cursor(cursor)
    if statuses:
        prefixes = [keys.status_prefix(s, wtype, tenant if wtype else None) for s in statuses]
    elif wtype is not None:
        prefixes = [keys.type_prefix(wtype, tenant)]
    else:
        prefixes = [keys.tenant_prefix(tenant)]

    def load(key: bytes, value: bytes) -> dict[str, Any] | None:
        if key[:1] == b"r":
            return store.run_at(key)
        parts = keys.split(key)
        tenant_id, run_id = parts[-2], parts[-1]
        return store.run(tenant_id, run_id)

    def keep(view: dict[str, Any]) -> bool:
        if wtype is not None and view["type"] != wtype:
            return False
        if tenant is not None and view["tenant"] != tenant:
            return False
        if statuses and view["status"] not in statuses:
            return False
        return match is None or match(view)

    page = _page(_walk(store, prefixes, after), load, keep, limit, budget)
    page.items = [v if full else run_row(v) for v in page.items]
    return page


def run_counts(store: ViewStore, wtype: str | None, tenant: str | None) -> dict[str, Any]:
    """Runs by status (and by type) from the counters the indexer keeps."""
    counts = dict.fromkeys(STATUSES, 0)
    by_type: dict[str, dict[str, int]] = {}
    prefix = keys.counter_prefix(wtype, tenant if wtype else None)
    for key, value in store.scan(prefix):
        t, ten, status = keys.split(key)
        if tenant is not None and ten != tenant:
            continue
        n = int.from_bytes(value, "big")
        counts[status] = counts.get(status, 0) + n
        per = by_type.setdefault(t, dict.fromkeys(STATUSES, 0))
        per[status] = per.get(status, 0) + n
    return {
        "counts": counts,
        "active": sum(counts[s] for s in ACTIVE),
        "total": sum(counts.values()),
        "by_type": by_type,
    }


# -- approvals ---------------------------------------------------------------------------


def list_approvals(
    store: ViewStore,
    *,
    statuses: list[str] | None,
    tenant: str | None = None,
    assignee: str | None = None,
    roles: list[str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
    budget: int = SCAN_BUDGET,
) -> Page:
    """Approval records by status (all statuses when None), optionally an inbox."""
    after = decode_cursor(cursor)
    if statuses:
        prefixes = [keys.approval_status_prefix(s, tenant) for s in statuses]
    else:
        prefixes = [keys.approval_status_prefix(None, tenant)]

    def load(key: bytes, value: bytes) -> dict[str, Any] | None:
        if key[:1] == b"a":
            return store.approval_at(key)
        _, ten, aid = keys.split(key)
        return store.approval(ten, aid)

    def keep(rec: dict[str, Any]) -> bool:
        if tenant is not None and rec["tenant"] != tenant:
            return False
        if statuses and rec["status"] not in statuses:
            return False
        if assignee is not None or roles:
            return may_decide(rec, assignee, roles or [])
        return True

    return _page(_walk(store, prefixes, after), load, keep, limit, budget)


def find_approvals(store: ViewStore, approval_id: str, tenant: str | None) -> list[dict[str, Any]]:
    """The records with this id (one per tenant that has it)."""
    if tenant is not None:
        rec = store.approval(tenant, approval_id)
        return [] if rec is None else [rec]
    found = []
    for key, _ in store.scan(keys.approval_id_prefix(approval_id)):
        rec = store.approval(keys.split(key)[-1], approval_id)
        if rec is not None:
            found.append(rec)
    return found


# -- step statistics -----------------------------------------------------------------------


def step_stats(
    store: ViewStore,
    *,
    wtype: str | None,
    step: str | None = None,
    since: int | None = None,
    until: int | None = None,
    samples: int = 0,
    budget: int = SAMPLE_BUDGET,
) -> tuple[list[dict[str, Any]], bool]:
    """Per ``(type, step)``: counts and duration percentiles of the steps that ended in
    ``[since, until)``; with ``samples`` also the latest that many samples of each. At most
    ``budget`` samples are read; the flag says the statistics stopped there (truncated)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    prefix = keys.sample_prefix(wtype)
    if wtype is not None and step is not None:
        prefix = prefix + step.encode() + SEP
    truncated = False
    for scanned, (_, value) in enumerate(store.scan(prefix), 1):
        if scanned > budget:
            truncated = True
            break
        s = keys.loads(value)
        if step is not None and s["step"] != step:
            continue
        if since is not None and s["ended_at"] < since:
            continue
        if until is not None and s["ended_at"] >= until:
            continue
        groups.setdefault((s["type"], s["step"]), []).append(s)
    out = []
    for (t, name), group in sorted(groups.items()):
        entry: dict[str, Any] = {"type": t, "step": name, **summarize(group)}
        if samples:
            group.sort(key=lambda s: s["ended_at"])
            entry["samples"] = group[-samples:]
        out.append(entry)
    return out, truncated
