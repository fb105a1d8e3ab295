"""Cron schedules that start runs: the compacted ``schedules`` topic and the start events.

Each record is keyed by the schedule's name and holds a :class:`ScheduleSpec`
as JSON; a tombstone deletes it. The timer service fires a schedule by
producing a CloudEvent to ``ingress`` (binary mode), which the ingress router
turns into a ``StartRun``:

* ``type`` ``io.headrace.run.start``, ``source`` ``headrace/schedule/<name>``,
  ``id`` ``<name>/<fire time, ISO 8601 UTC>`` — the router dedupes on
  source + id, so a firing produced twice (a crash before the service recorded
  it) starts one run;
* extension ``tenant``; data ``{"workflow", "version", "input", "run_id"}``
  with ``run_id`` ``<name>-<fire time, compact UTC>`` (:func:`run_id_for`).

``headrace schedule trigger`` produces the same event with id
``<name>/manual/<time>``, outside the schedule's overlap policy.
"""

from __future__ import annotations

import getpass
import json
import re
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headrace.compacted import CompactedMap
from headrace.core.localtime import utc_iso, zone
from headrace.core.outbox import Outgoing
from headrace.core.partitioner import positive_hash
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.services.timers.schedule_plan import compiled, run_id_for
from headrace.settings import Settings
from headrace.streams.cloudevents_in import START_TYPE, encode_event

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)


class Overlap(StrEnum):
    """What a firing does while the schedule's previous run still runs (as in Temporal)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"


class ScheduleSpec(BaseModel):
    """A schedule as kept in the ``schedules`` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(pattern=NAME_PATTERN)
    workflow: str = Field(min_length=1)
    version: int | None = Field(None, ge=1)
    cron: str
    timezone: str = "UTC"
    input: Any = Field(default_factory=dict)
    tenant: str = "default"
    overlap: Overlap = Overlap.SKIP
    catchup_window_ms: int = Field(300_000, ge=0)
    paused: bool = False
    note: str = ""
    created_at: int = 0
    updated_at: int = 0
    updated_by: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        compiled(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        zone(v)
        return v

    def to_record(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def source(self) -> str:
        return f"headrace/schedule/{self.name}"


def _decode(name: str, value: bytes) -> ScheduleSpec:
    spec = ScheduleSpec.model_validate_json(value)
    if spec.name != name:
        raise ValueError(f"record keyed {name!r} holds schedule {spec.name!r}")
    return spec


class ScheduleBook(CompactedMap[ScheduleSpec]):
    """Every schedule, by name, kept current from the ``schedules`` topic."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topics.schedules, _decode, name="schedules")


def owner(name: str, partitions: int) -> int:
    """The ``timers`` partition whose owner fires schedule ``name``."""
    return positive_hash(f"schedule:{name}") % partitions


def start_event(
    settings: Settings, spec: ScheduleSpec, fire_time: int, *, manual: bool = False
) -> Outgoing:
    """The ``ingress`` record that starts the run of one firing (module docstring)."""
    stamp = utc_iso(fire_time)
    run_id = run_id_for(spec.name, fire_time)
    event_id = f"{spec.name}/{stamp}"
    if manual:
        run_id = f"{spec.name}-manual-{run_id[len(spec.name) + 1 :]}"
        event_id = f"{spec.name}/manual/{stamp}"
    data = {
        "workflow": spec.workflow,
        "version": spec.version,
        "input": spec.input,
        "run_id": run_id,
    }
    record = encode_event(
        START_TYPE, spec.source, data, event_id=event_id, tenant=spec.tenant, key=spec.name
    )
    return Outgoing(settings.topics.ingress, record.value, record.key, None, record.headers)


# -- the CLI's side ---------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"schedule name {name!r} is not valid — use letters, digits, '_', '.', '-' "
            "(up to 100, starting with a letter or digit)",
        )
    return name


def read_schedules(settings: Settings, timeout: float = 30.0) -> list[ScheduleSpec]:
    with ScheduleBook(settings) as book:
        book.wait_current(timeout)
        return [spec for _, spec in book.items()]


def get_schedule(settings: Settings, name: str, timeout: float = 30.0) -> ScheduleSpec:
    for spec in read_schedules(settings, timeout):
        if spec.name == name:
            return spec
    raise HeadraceError(
        ErrorCode.CONFIG_INVALID,
        f"there is no schedule {name!r} — `headrace schedule list` shows them",
    )


def publish_schedule(settings: Settings, spec: ScheduleSpec) -> ScheduleSpec:
    """Write ``spec`` (stamped with who and when) to ``schedules``."""
    now = int(time.time() * 1000)
    stamped = spec.model_copy(
        update={"updated_at": now, "created_at": spec.created_at or now, "updated_by": _user()}
    )
    producer = make_producer(settings, "headrace-schedule")
    produce_sync(producer, settings.topics.schedules, stamped.to_record(), key=spec.name)
    return stamped


def new_schedule(doc: dict[str, Any]) -> ScheduleSpec:
    """Validate a schedule from the CLI; errors name the field and what to do."""
    try:
        return ScheduleSpec.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID, f"schedule {doc.get('name')}: {problems}"
        ) from None


def delete_schedule(settings: Settings, name: str) -> None:
    producer = make_producer(settings, "headrace-schedule")
    produce_sync(producer, settings.topics.schedules, None, key=name)


def trigger_schedule(settings: Settings, spec: ScheduleSpec) -> str:
    """Start one run of ``spec`` now; returns its run id."""
    msg = start_event(settings, spec, int(time.time() * 1000), manual=True)
    producer = make_producer(settings, "headrace-schedule")
    produce_sync(producer, msg.topic, msg.value, key=msg.key, headers=list(msg.headers or ()))
    return str(json.loads(msg.value or b"{}")["run_id"])


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
