"""What a schedule does at a tick: which firings to start, skip or buffer. Pure.

A schedule has fired through ``state.last`` (or was created or changed at
``spec.updated_at``, whichever is later: changing a schedule — resuming it,
say — does not catch up on firings before the change). At ``now``, the cron
firings in ``(since, now]`` are *missed*; those older than the catch-up window
are skipped as late, the rest are started subject to the overlap policy:

``allow``       start every one
``skip``        start the oldest unless the schedule's last run still runs;
                the others would overlap it and are skipped
``buffer_one``  like ``skip``, but keep the newest skipped firing and start it
                once the last run has finished

``running`` says whether the schedule's last run still runs: True, False, or
None when nobody can tell — then skip and buffer_one behave as if it had
finished (and the caller counts that), because the platform has no query model
of run status yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache

from headrace.core.cron import Cron, firings, parse_cron
from headrace.core.localtime import utc_iso

MAX_CATCH_UP = 1000  # firings considered in one tick; older ones count as late


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the timer service remembers of a schedule (in its RocksDB table)."""

    last: int = 0  # the newest firing handled (started, skipped or buffered)
    buffered: int | None = None  # buffer_one: a firing waiting for the last run to finish
    last_run: str | None = None  # run id of the last firing started

    def encode(self) -> bytes:
        return json.dumps(
            {"last": self.last, "buffered": self.buffered, "last_run": self.last_run}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ScheduleState | None:
        if raw is None:
            return None
        d = json.loads(raw)
        return cls(int(d.get("last") or 0), d.get("buffered"), d.get("last_run"))


@dataclass(frozen=True, slots=True)
class Plan:
    fires: list[int] = field(default_factory=list)  # firing times to start now, oldest first
    late: int = 0  # skipped: older than the catch-up window
    overlapped: int = 0  # skipped: would overlap a running run
    guessed: bool = False  # skip/buffer_one decided without knowing if the last run runs
    state: ScheduleState | None = None  # the new state, None: unchanged


@lru_cache(maxsize=1024)
def compiled(text: str) -> Cron:
    return parse_cron(text)


def run_id_for(name: str, fire_time: int) -> str:
    """``nightly-20260601T020000Z``: the run a firing starts (stable across retries)."""
    stamp = utc_iso(fire_time).replace("-", "").replace(":", "")
    return f"{name}-{stamp.split('.')[0].rstrip('Z')}Z"


def plan(
    *,
    name: str,
    cron: str,
    timezone: str,
    overlap: str,
    catchup_window_ms: int,
    paused: bool,
    updated_at: int,
    state: ScheduleState | None,
    now: int,
    running: bool | None = None,
) -> Plan:
    """Decide one schedule at ``now`` (see the module docstring)."""
    if paused:
        return Plan()
    since = max(state.last if state else 0, updated_at)
    missed = firings(compiled(cron), timezone, since, now, MAX_CATCH_UP)
    buffered = state.buffered if state else None
    last_run = state.last_run if state else None
    if not missed and buffered is None:
        return Plan()
    in_window = [t for t in missed if now - t <= catchup_window_ms]
    late = len(missed) - len(in_window)
    last = missed[-1] if missed else since
    if last_run is None:
        running = False
    guessed = overlap != "allow" and running is None and bool(in_window or buffered)
    busy = bool(running)
    if overlap == "allow":
        fires, overlapped, buffered = in_window, 0, None
    elif busy:
        fires = []
        if overlap == "buffer_one":
            candidates = ([buffered] if buffered is not None else []) + in_window
            buffered = candidates[-1] if candidates else None
            overlapped = max(0, len(candidates) - 1)
        else:
            overlapped, buffered = len(in_window), None
    else:
        candidates = ([buffered] if buffered is not None else []) + in_window
        fires = candidates[:1]
        if overlap == "buffer_one" and len(candidates) > 1:
            buffered = candidates[-1]
            overlapped = len(candidates) - 2
        else:
            buffered = None
            overlapped = max(0, len(candidates) - 1)
    if fires:
        last_run = run_id_for(name, fires[-1])
    base = state or ScheduleState()
    new = replace(base, last=last, buffered=buffered, last_run=last_run)
    return Plan(fires, late, overlapped, guessed, new if new != state else None)
