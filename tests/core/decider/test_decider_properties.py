"""Properties of decide/evolve over random definitions run in a random world.

* every run ends (the decider never crashes, nothing waits forever);
* replaying a run's events — encoded to the wire, sealed and decoded —
  through ``evolve`` from an empty state rebuilds byte-identical state;
* the same commands give byte-identical events;
* re-applying any command already applied yields no events and no change.
"""

from __future__ import annotations

import os
from typing import Any

from decider_strategies import random_responder, scenarios
from hypothesis import HealthCheck, given, settings

from headrace.core.chain import seal
from headrace.core.codec import decode_event, encode_event
from headrace.core.decider import State, apply, evolve
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command
from headrace.core.simulate import Script, Simulation

PROPERTY = settings(
    max_examples=int(os.environ.get("HEADRACE_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _run(scenario: tuple[Definition, dict[str, Any], dict[str, Any], int]) -> Simulation:
    definition, run_input, script, seed = scenario
    sim = Simulation(
        definition,
        run_input,
        Script.from_dict(script),
        responder=random_responder(seed),
        max_commands=3000,
    )
    return sim.run()


@PROPERTY
@given(scenarios())
def test_every_run_ends(scenario: Any) -> None:
    sim = _run(scenario)
    assert sim.state.finished, (sim.status, sim.waiting_on(), sim.timeline()[-3000:])
    assert sim.state.pending == {} and sim.state.flows == {}
    seqs = [e.seq for e in sim.events]
    assert seqs == list(range(1, len(seqs) + 1))


@PROPERTY
@given(scenarios())
def test_replaying_the_sealed_wire_events_rebuilds_the_identical_state(scenario: Any) -> None:
    sim = _run(scenario)
    sealed = seal(sim.events)
    replayed = State()
    for _, raw in sealed:
        evolve(replayed, decode_event(raw))
    sim.state.seal(sealed[-1][0].hash)
    assert replayed.to_bytes() == sim.state.to_bytes()
    # a snapshot taken mid-run plus the events after it rebuilds the same state
    cut = len(sealed) // 2
    partial = State()
    for _, raw in sealed[:cut]:
        evolve(partial, decode_event(raw))
    resumed = State.from_bytes(partial.to_bytes())
    for _, raw in sealed[cut:]:
        evolve(resumed, decode_event(raw))
    assert resumed.to_bytes() == sim.state.to_bytes()


@PROPERTY
@given(scenarios())
def test_the_same_commands_give_byte_identical_events(scenario: Any) -> None:
    sim = _run(scenario)
    state = State()
    again = []
    for cmd in sim.commands:
        again.extend(apply(state, cmd, sim.definition))
    assert [encode_event(e) for e in again] == [encode_event(e) for e in sim.events]
    assert state.to_bytes() == sim.state.to_bytes()


@PROPERTY
@given(scenarios())
def test_reapplying_an_applied_command_yields_nothing(scenario: Any) -> None:
    sim = _run(scenario)
    state = State()
    seen: list[Command] = []
    for cmd in sim.commands:
        apply(state, cmd, sim.definition)
        before = state.to_bytes()
        assert apply(state, cmd, sim.definition) == [], cmd
        assert state.to_bytes() == before
        if seen:  # an older redelivery, too
            old = seen[len(seen) // 2]
            assert apply(state, old, sim.definition) == [], old
            assert state.to_bytes() == before
        seen.append(cmd)
    for cmd in seen:
        assert apply(state, cmd, sim.definition) == [], cmd
