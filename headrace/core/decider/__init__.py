"""The deterministic engine core: ``decide`` and ``evolve``.

``decide(state, command, definition) -> [events]`` says what a command does
to a run; ``evolve(state, event) -> state`` folds an event into the run's
state; ``effects(event)`` reads off what the world must do (dispatch a task,
arm a timer, start a child...). No wall clock, randomness or I/O: time comes
on the command (the run's logical time is ``max(state.time, command.time)``),
retry jitter is a hash of the task id. ``apply`` is decide-and-evolve in one
pass, in place — the orchestrator's hot path.

The state model
---------------
A run's position is a tree of *flows*. The root flow (id ``""``) walks the
definition's main steps. A flow is always at exactly one step, in one of
four states: READY (positioned, not started — also how a suspended run holds
its steps), ACTIVE (started, waiting), ENDED or FAILED (done, about to be
collected by its owner). A ``parallel`` step running in flow F starts one
child flow per branch (``F/<step>.<branch>``); a ``foreach`` starts one per
running iteration (``F/<step>#<index>``), at most ``concurrency`` at a time;
children of children nest the same way. While its children run, the
parallel/foreach step keeps the join's progress (which branches are done,
results by item index) in the parent flow's ``sub``. Compensation runs in a
flow of its own (``~``).

Why flows rather than a single "current step": parallel branches and
iterations advance independently and can each be in a task, a timer or a
nested fan-out at the same time; giving each its own flow makes every step
kind work the same at any depth, makes a flow's data its own copy (branches
and iterations do not see each other's writes), and lets failure propagate
structurally — a failure no ``catch`` handles ends its flow and becomes the
owner's problem (branch failure policy, then the parallel step's own
``catch``, up to the root, whose failure fails the run).

Everything the run waits for is indexed in ``state.pending`` by id (task
attempt, timer, signal wait, approval, child run) → ``[flow, purpose]``.
Commands address these ids, so a command for anything not pending is stale
and ignored: this is what keeps idempotency bounded for months-long runs.
Flow ids, effect ids (``<run_id>:<seq>``) and idempotency keys
(``<run_id>/<step>[/<iteration>]``, ``@n`` for the n-th visit of a looped
step) are all derived from the history, so a replay derives the same ones.

Data
----
Each flow has its own data (the run input at first). A step's result is
placed by its ``into``: a dotted path (``payment`` or ``order.payment``) sets
that key; without ``into`` an object result is shallow-merged into the data
and any other result is dropped (``set`` without ``into`` replaces the data;
``succeed`` with ``output`` replaces it and ends the flow). Results: a task's
(``output``-mapped) result, a signal's data, a child's output, an approval's
``{outcome, decisions}``, a spawn's child run id, a foreach's list of
iteration results in item order (each iteration's final data, or
``collect`` of it), a parallel's ``{branch: final data}`` — and with neither
``output`` nor ``into`` a parallel merges each completed branch's final data
into the run data in declaration order. Branches and iterations start from a
copy of the data when their step started (an iteration with ``.[as] = item``
and ``$index``/``$item``) and do not see each other's writes. A catch's
``into`` places ``{code, message, step[, details]}``. The run's output is
the root flow's final data.

See :mod:`.errors` for the built-in error codes, :mod:`.decide` for
idempotency and rejected commands, :mod:`.tasks` for retries,
:mod:`.fanout` for joins, :mod:`.approvals` for quorums, :mod:`.lifecycle`
for suspension, cancellation and compensation, :mod:`.timers` for timer
purposes and business time, :mod:`.data` for how results are placed.
"""

from headrace.core.decider.decide import apply, decide
from headrace.core.decider.effects import Effect, effects
from headrace.core.decider.evolve import evolve
from headrace.core.decider.state import State

__all__ = ["Effect", "State", "apply", "decide", "effects", "evolve"]
