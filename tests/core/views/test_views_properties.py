"""Properties of the views over random definitions run by the real decider.

* the run view agrees with the decider's own state after every event: status,
  suspension, the main flow's data, the active steps;
* folding a log twice, or with redeliveries at random later positions, gives
  the view of the log without them (idempotent on ``(run, seq)``);
* at the end of a run nothing is active and no approval is pending;
* every sample closes a step that started earlier in the same flow.
"""

from __future__ import annotations

import os
import random
from typing import Any

from decider_strategies import random_responder, scenarios
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.core.decider import State, evolve
from headrace.core.decider.state import ACTIVE
from headrace.core.envelope import Event, EventType
from headrace.core.simulate import Script, Simulation
from headrace.core.views import RunViews

PROPERTY = settings(
    max_examples=int(os.environ.get("HEADRACE_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _events(scenario: Any) -> list[Event]:
    definition, run_input, script, seed = scenario
    sim = Simulation(
        definition,
        run_input,
        Script.from_dict(script),
        responder=random_responder(seed),
        max_commands=3000,
    ).run()
    return sim.events


def _status(state: State) -> str:
    return "suspended" if state.suspended and state.status == "running" else state.status


@PROPERTY
@given(scenarios())
def test_the_run_view_agrees_with_the_decider_state_after_every_event(scenario: Any) -> None:
    state = State()
    views = RunViews()
    for event in _events(scenario):
        evolve(state, event)
        assert views.fold(event)
        view = views.run
        assert view is not None
        assert view["status"] == _status(state), event
        root = state.flows.get("")
        if root is not None and state.status == "running":
            assert view["data"] == root.data, event
        active = {(f.id, f.step) for f in state.flows.values() if f.status == ACTIVE}
        assert {(flow, a["step"]) for flow, a in view["active_steps"].items()} == active, event
    assert views.run is not None
    if state.status == "completed":
        assert views.run["output"] == state.outcome
    elif state.finished:
        assert views.run["error"] == state.outcome
    assert views.run["active_steps"] == {} and views.run["approvals"] == {}
    assert all(a["status"] != "pending" for a in views.approvals.values())
    requested = [e for e in _events(scenario) if e.type is EventType.ApprovalRequested]
    assert len(views.approvals) == len(requested)


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_redeliveries_and_refolds_collapse(scenario: Any, rng: random.Random) -> None:
    events = _events(scenario)
    clean = RunViews().fold_all(events)
    noisy = list(events)
    for _ in range(min(len(events), 12)):
        event = events[rng.randrange(len(events))]
        first = next(n for n, e in enumerate(noisy) if e is event)
        noisy.insert(rng.randrange(first + 1, len(noisy) + 1), event)  # a later redelivery
    assert noisy != events or len(events) == 0
    dirty = RunViews().fold_all(noisy)
    twice = RunViews().fold_all(events)
    assert not any(twice.fold(e) for e in events)
    for other in (dirty, twice):
        assert other.run == clean.run
        assert other.approvals == clean.approvals
        assert other.samples == clean.samples


@PROPERTY
@given(scenarios())
def test_every_sample_closes_a_step_that_started_in_its_flow(scenario: Any) -> None:
    events = _events(scenario)
    views = RunViews().fold_all(events)
    by_seq = {e.seq: e for e in events}
    for sample in views.samples:
        end = by_seq[sample["seq"]]
        assert end.type in (EventType.StepCompleted, EventType.StepFailed)
        assert end.payload["flow"] == sample["flow"] and end.payload["step"] == sample["step"]
        starts = [
            e
            for e in events
            if e.type is EventType.StepStarted
            and e.seq < end.seq
            and e.payload["flow"] == sample["flow"]
            and e.payload["step"] == sample["step"]
        ]
        assert starts and sample["duration_ms"] == end.time - starts[-1].time >= 0
