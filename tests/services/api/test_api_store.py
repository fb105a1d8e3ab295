"""The query store on a real RocksDB (no broker): indexes, counters and paging stay exact
however events are batched, redelivered or moved between statuses."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.core.decider import State, apply
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.views import RunViews
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api import queries
from headrace.services.api.indexer import Indexer
from headrace.services.api.store import ViewStore
from headrace.settings import Settings

C = CommandType


def _definition(wtype: str) -> Definition:
    return Definition.model_validate(
        {
            "type": wtype,
            "version": 1,
            "steps": [
                {"name": "a", "kind": "task", "queue": "q"},
                {"name": "ok", "kind": "approval", "assignees": ["ann"], "roles": ["risk"]},
            ],
        }
    )


def _run(tenant: str, run_id: str, wtype: str, fate: str) -> list[Event]:
    """One run's events, driven to ``fate``: running, suspended, completed, cancelled, ..."""
    definition, state, events = _definition(wtype), State(), []
    n = 0

    def send(kind: CommandType, payload: dict[str, Any]) -> list[Event]:
        nonlocal n
        n += 1
        out = apply(state, Command(f"c{n}", tenant, run_id, kind, 1000 * n, payload), definition)
        events.extend(out)
        return out

    send(C.StartRun, {"input": {"i": run_id}})
    task = next(e for e in events if e.type is EventType.TaskScheduled).payload["task_id"]
    send(C.CompleteTask, {"task_id": task, "result": {"done": True}})
    aid = next(e for e in events if e.type is EventType.ApprovalRequested).payload["approval_id"]
    if fate == "suspended":
        send(C.SuspendRun, {"actor": "ops", "reason": "r"})
    elif fate == "completed":
        send(C.DecideApproval, {"approval_id": aid, "user": "ann", "decision": "approve"})
    elif fate == "cancelled":
        send(C.SuspendRun, {"reason": "first"})
        send(C.CancelRun, {"reason": "then"})
    elif fate == "terminated":
        send(C.TerminateRun, {"reason": "stop"})
    return events


FATES = ["running", "suspended", "completed", "cancelled", "terminated"]


def _world(seed: int) -> dict[tuple[str, str], tuple[str, list[Event]]]:
    rng = random.Random(seed)
    out = {}
    for i in range(rng.randint(5, 25)):
        tenant, wtype = rng.choice(["acme", "bigco", "c"]), rng.choice(["order", "refund"])
        out[(tenant, f"r{i}")] = (wtype, _run(tenant, f"r{i}", wtype, rng.choice(FATES)))
    return out


def _log(world: dict, rng: random.Random) -> list[Event]:
    """Interleave the runs (each in order) and add redeliveries."""
    queues = [list(events) for _, events in world.values()]
    log: list[Event] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        log.append(q.pop(0))
        if rng.random() < 0.2:
            log.append(rng.choice(log))  # an earlier event again
    return log


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32), batch=st.integers(1, 40))
def test_indexes_and_counters_match_a_recount_however_events_arrive(
    tmp_path_factory: Any, seed: int, batch: int
) -> None:
    rng = random.Random(seed)
    world = _world(seed)
    log = _log(world, rng)
    store = ViewStore(Path(tmp_path_factory.mktemp("views")), "events")
    try:
        indexer = Indexer(Settings(), store)
        for start in range(0, len(log), batch):
            chunk = [(0, start + i, e) for i, e in enumerate(log[start : start + batch])]
            changes = indexer.fold(chunk)
            changes.offsets = {0: start + len(chunk)}
            store.write(changes)
        assert store.offsets() == {0: len(log)}
        views = {k: RunViews().fold_all(events) for k, (_, events) in world.items()}

        # every run's view equals the in-memory fold of its own events
        for (tenant, run_id), v in views.items():
            assert store.run(tenant, run_id) == v.run

        # counters equal a recount, and the status index has one entry per run
        recount: dict[str, int] = {}
        for v in views.values():
            assert v.run is not None
            recount[v.run["status"]] = recount.get(v.run["status"], 0) + 1
        counts = queries.run_counts(store, None, None)["counts"]
        assert {s: n for s, n in counts.items() if n} == recount
        index = list(store.scan(b"s"))
        assert len(index) == len(views)

        # paging through any filter yields each matching run exactly once
        for wtype in (None, "order"):
            for tenant in (None, "acme"):
                for statuses in (None, ["running", "suspended"], ["completed"]):
                    got: list[tuple[str, str]] = []
                    cursor = None
                    while True:
                        page = queries.list_runs(
                            store,
                            wtype=wtype,
                            tenant=tenant,
                            statuses=statuses,
                            limit=3,
                            cursor=cursor,
                        )
                        got += [(r["tenant"], r["run_id"]) for r in page.items]
                        if page.next is None:
                            break
                        cursor = page.next
                    want = {
                        k
                        for k, v in views.items()
                        if v.run is not None
                        and (wtype is None or v.run["type"] == wtype)
                        and (tenant is None or v.run["tenant"] == tenant)
                        and (statuses is None or v.run["status"] in statuses)
                    }
                    assert len(got) == len(set(got)) and set(got) == want

        # approvals: one record per run, pending only where the run still waits
        pending = queries.list_approvals(store, statuses=["pending"], assignee="ann", limit=1000)
        waiting = {
            k for k, v in views.items() if v.run and v.run["status"] in ("running", "suspended")
        }
        assert {(a["tenant"], a["run_id"]) for a in pending.items} == waiting
        everything = queries.list_approvals(store, statuses=None, limit=1000).items
        assert len(everything) == len(views)
        assert len(list(store.scan(b"q"))) == len(views)
    finally:
        store.close()


def test_a_cursor_that_was_not_given_out_is_refused(tmp_path: Path) -> None:
    store = ViewStore(tmp_path, "events")
    try:
        with pytest.raises(HeadraceError) as bad:
            queries.list_runs(store, cursor="%%%")
        assert bad.value.code is ErrorCode.API_BAD_REQUEST
    finally:
        store.close()


def test_a_database_built_from_another_topic_is_refused(tmp_path: Path) -> None:
    ViewStore(tmp_path, "a.events").close()
    with pytest.raises(HeadraceError) as other:
        ViewStore(tmp_path, "b.events")
    assert other.value.code is ErrorCode.CONFIG_INVALID and "a.events" in other.value.message
