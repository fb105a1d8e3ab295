"""One step of the engine around ``decide``: a command in, sealed events out; and replay.

This is the whole of what the orchestrator does to a run, minus I/O:

* :func:`handle` decides a command against the run's state, seals the new
  events onto the run's hash chain (encoding each once) and leaves the state
  evolved and sealed;
* :func:`fold` is replay: it applies one event read back from the log if it
  is the run's next one, and says whether it did.

Effects are read off the events afterwards (:func:`headrace.core.decider.effects`),
the same way on both paths, so a replayed event re-emits what it asked for.
"""

from __future__ import annotations

from headrace.core.chain import seal
from headrace.core.decider import State, apply, evolve
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, Event


def handle(state: State, command: Command, definition: Definition) -> list[tuple[Event, bytes]]:
    """Apply ``command`` to ``state`` in place; return the new events, sealed and encoded.

    If this raises, ``state`` may be half-updated: reload it from the snapshot.
    """
    prev = state.last_hash
    events = apply(state, command, definition)
    if not events:
        return []
    sealed = seal(events, prev)
    state.seal(sealed[-1][0].hash)
    return sealed


class Gap(Exception):
    """An event arrived whose seq is beyond the run's next one: the log lost events."""


def fold(state: State, event: Event) -> bool:
    """Replay ``event`` into ``state`` if it is the next one; False if already reflected.

    Raises :class:`Gap` if it is further ahead than the next seq.
    """
    if event.seq <= state.last_seq:
        return False
    if event.seq != state.last_seq + 1:
        raise Gap(
            f"run {event.run_key}: event seq {event.seq} follows seq {state.last_seq} "
            "in the log — events are missing"
        )
    evolve(state, event)
    return True
