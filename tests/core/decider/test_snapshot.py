"""Run snapshots: ``State.to_bytes`` / ``State.from_bytes`` as the orchestrator uses them.

The orchestrator loads a run's snapshot, decides a command, seals the events
and writes the snapshot back, for every command. Flows stay packed (their
snapshot segment, undecoded) until a decision touches them, and a packed
flow's segment is written back as it is — so these properties drive random
runs through that cycle and compare, after every command, with the run kept
in memory and with its events replayed (from the previous snapshot, as a
worker taking over a partition does).
"""

from __future__ import annotations

import marshal
from typing import Any

import pytest
from decider_kit import Run, definition, task
from decider_strategies import random_responder, scenarios
from hypothesis import given
from test_decider_properties import PROPERTY

from headrace.core.chain import seal
from headrace.core.codec import decode_event
from headrace.core.decider import State, apply, evolve
from headrace.core.decider.state import Flow, PackedFlow
from headrace.core.engine import handle
from headrace.core.envelope import CommandType
from headrace.core.simulate import Script, Simulation


def _sim(scenario: Any) -> Simulation:
    definition_, run_input, script, seed = scenario
    sim = Simulation(
        definition_,
        run_input,
        Script.from_dict(script),
        responder=random_responder(seed),
        max_commands=3000,
    )
    return sim.run()


@PROPERTY
@given(scenarios())
def test_a_run_driven_through_snapshots_matches_the_run_in_memory(scenario: Any) -> None:
    sim = _sim(scenario)
    live = State()
    raw = State().to_bytes()
    replayed = State()
    for cmd in sim.commands:
        loaded = State.from_bytes(raw)
        sealed = handle(loaded, cmd, sim.definition)
        prev = live.last_hash
        live_events = apply(live, cmd, sim.definition)
        assert [wire for _, wire in sealed] == [wire for _, wire in seal(live_events, prev)]
        if sealed:
            live.seal(sealed[-1][0].hash)
        replayed = State.from_bytes(replayed.to_bytes())  # replay also starts from a snapshot
        for _, wire in sealed:
            evolve(replayed, decode_event(wire))
        raw = loaded.to_bytes()
        assert raw == live.to_bytes() == replayed.to_bytes(), cmd
        assert State.from_bytes(raw).to_bytes() == raw
    assert live.finished


def _fan_out(width: int) -> Run:
    branches = [{"name": f"b{i}", "steps": [task(f"t{i}")]} for i in range(width)]
    return Run(definition({"name": "fan", "kind": "parallel", "branches": branches}))


def test_loading_a_snapshot_decodes_no_flow_until_one_is_used() -> None:
    run = _fan_out(3)
    raw = run.state.to_bytes()
    loaded = State.from_bytes(raw)
    assert list(loaded.flows) == list(run.state.flows)
    assert all(type(f) is PackedFlow for f in loaded.flows.values())
    assert loaded.to_bytes() == raw

    branch = loaded.flows["fan.b1"]
    assert branch.step == "t1"  # reading decodes it in place
    assert type(branch) is Flow and branch.to_list() == run.state.flows["fan.b1"].to_list()
    assert type(loaded.flows["fan.b0"]) is PackedFlow
    assert loaded.to_bytes() == raw


def test_writing_a_packed_flow_first_keeps_its_other_fields() -> None:
    run = _fan_out(2)
    loaded = State.from_bytes(run.state.to_bytes())
    flow = loaded.flows["fan.b0"]
    flow.status = 9
    assert type(flow) is Flow
    assert flow.status == 9 and flow.step == "t0" and flow.sub == run.state.flows["fan.b0"].sub
    expected = run.state.flows["fan.b0"].to_list()
    expected[7] = 9
    assert flow.to_list() == expected


def test_a_decision_on_a_loaded_snapshot_changes_only_the_flows_it_touches() -> None:
    run = _fan_out(4)
    loaded = State.from_bytes(run.state.to_bytes())
    cmd = run.command(CommandType.CompleteTask, {"task_id": run.task_id("t2"), "result": {}})
    events = apply(loaded, cmd, run.defn)
    assert [e.type.value for e in events] == ["TaskCompleted", "StepCompleted", "BranchCompleted"]
    decoded = sorted(id_ for id_, f in loaded.flows.items() if type(f) is Flow)
    assert decoded == [""]  # the parallel's own flow; the finished branch left
    apply(run.state, cmd, run.defn)
    assert loaded.to_bytes() == run.state.to_bytes()


def test_a_corrupt_flow_segment_says_to_replay() -> None:
    run = _fan_out(2)
    v = marshal.loads(run.state.to_bytes()[1:])
    v[11]["fan.b0"] = b"\xff"
    loaded = State.from_bytes(bytes((2,)) + marshal.dumps(v, 2))
    with pytest.raises(ValueError, match="replay"):
        _ = loaded.flows["fan.b0"].step


def test_snapshots_of_the_previous_format_still_load() -> None:
    run = _fan_out(2)
    st = run.state
    v1 = bytes((1,)) + marshal.dumps(
        [
            st.tenant,
            st.run_id,
            st.wtype,
            st.wversion,
            st.status,
            st.suspended,
            st.time,
            st.last_seq,
            st.last_hash.hex(),
            st.input,
            st.parent,
            [f.to_list() for f in st.flows.values()],
            st.pending,
            st.comp,
            st.unwind,
            st.recent,
            st.spawned,
            st.outcome,
        ],
        2,
    )
    assert State.from_bytes(v1).to_bytes() == st.to_bytes()
