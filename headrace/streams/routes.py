"""What the ingress router does with one record: a command, a signal, or the DLQ.

:class:`Routes` turns one ``ingress`` record into the messages to produce:

* ``io.headrace.run.start`` → a ``StartRun`` command on ``commands``, the
  definition's version resolved and pinned, the input checked against its
  ``input_schema`` first;
* ``io.headrace.run.signal`` → a ``signal`` message on ``signals`` (shape in
  docs/ingress.md);
* any other type → a ``StartRun`` for every deployed definition (latest
  version of each type) with a matching trigger;
* anything it cannot act on → the record itself on ``dlq``, with the reason in
  headers — including a start of a drained workflow type or tenant
  (``HR-RUN-004``, :mod:`headrace.drain`).

Ids are derived from the event's ``source`` and ``id``
(:mod:`headrace.streams.cloudevents_in`), so a duplicate event yields the
identical command; the orchestrator ignores a ``StartRun`` for a run that
exists. The command's ``time`` is the ingress record's timestamp, so a
redelivered record yields the same bytes too.

The definition catalog is read in the background and may lag a deploy made a
moment ago. Before an event is dead-lettered for naming an unknown workflow
(or a type nobody triggers on), the catalog is brought up to the topic's end
once per batch: a deploy acknowledged before the event was produced is then
seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from jsonschema import SchemaError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import Outgoing, command_message, signal_body, signal_message
from headrace.definitions import Deployed
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings
from headrace.streams.cloudevents_in import (
    RUN_ID_PATTERN,
    SIGNAL_TYPE,
    START_TYPE,
    Incoming,
    Rejected,
    derived_id,
    parse,
    start_run_id,
    trigger_run_id,
)
from headrace.streams.triggers import Trigger, TriggerIndex

log = logging.getLogger("headrace.router")

START_FIELDS = frozenset({"workflow", "version", "input", "run_id"})
SIGNAL_FIELDS = frozenset({"name", "run_id", "correlation", "data"})
MAX_ERROR_HEADER = 1000


class Drains(Protocol):
    """What routing needs of :class:`~headrace.drain.DrainBook`."""

    def refusal(self, tenant: str, workflow_type: str) -> str | None: ...


class Definitions(Protocol):
    """What routing needs of :class:`~headrace.definitions.DefinitionCatalog`."""

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None: ...
    def all(self) -> list[Deployed]: ...
    def wait_current(self, timeout: float = 30.0) -> None: ...
    def on_deployed(self, listener: Callable[[Deployed], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class IngressRecord:
    """One record read from ``ingress`` (what the DLQ needs to give it back)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_ms: int = 0


class Outcome(StrEnum):
    STARTED = "started"
    SIGNALLED = "signalled"
    TRIGGERED = "triggered"
    IGNORED = "ignored"  # a trigger type whose filters all said no
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Routed:
    outcome: Outcome
    messages: list[Outgoing]


class Routes:
    """Routing decisions for the ingress router; one per router thread."""

    def __init__(
        self,
        settings: Settings,
        catalog: Definitions,
        *,
        catch_up_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        drains: Drains | None = None,
    ) -> None:
        self.routing = settings.routing
        self.drains = drains
        self.topics = settings.topics
        self.catalog = catalog
        self.catch_up_timeout = catch_up_timeout
        self.clock = clock
        self._caught_up = False
        self.triggers = TriggerIndex(catalog)
        self._validators: dict[tuple[str, int], Any] = {}
        catalog.on_deployed(self.triggers.deployed)

    # -- entry points --------------------------------------------------------

    def begin_batch(self) -> None:
        """A new batch was fetched: the catalog may be brought up to date once more."""
        self._caught_up = False

    def route(self, rec: IngressRecord) -> Routed:
        """The messages ``rec`` becomes; never raises on bad input."""
        try:
            event = parse(rec.value, rec.headers)
            if event.type == START_TYPE:
                return Routed(Outcome.STARTED, [self._start(rec, event)])
            if event.type == SIGNAL_TYPE:
                return Routed(Outcome.SIGNALLED, [self._signal(rec, event)])
            return self._trigger(rec, event)
        except Rejected as exc:
            return Routed(Outcome.DEAD_LETTERED, [self.dead_letter(rec, exc.code, exc.message)])
        except HeadraceError as exc:
            return Routed(Outcome.DEAD_LETTERED, [self.dead_letter(rec, exc.code, exc.message)])
        except Exception as exc:  # a bug must not stop the router: park the record
            log.exception("routing %s[%d]@%d failed", rec.topic, rec.partition, rec.offset)
            return Routed(
                Outcome.DEAD_LETTERED,
                [self.dead_letter(rec, ErrorCode.INTERNAL, f"router bug: {exc!r}")],
            )

    def dead_letter(self, rec: IngressRecord, code: ErrorCode, message: str) -> Outgoing:
        """``rec`` as it came, for the ``dlq`` topic, with why in its headers."""
        if len(message) > MAX_ERROR_HEADER:
            message = message[: MAX_ERROR_HEADER - 3] + "..."
        log.warning(
            "dead-lettered %s[%d]@%d: %s %s",
            rec.topic,
            rec.partition,
            rec.offset,
            code.code,
            message,
            extra={"error_code": code.code},
        )
        headers: list[Any] = [
            *rec.headers,
            ("headrace-error-code", code.code.encode()),
            ("headrace-error", message.encode()),
            ("headrace-source-topic", rec.topic.encode()),
            ("headrace-source-partition", str(rec.partition).encode()),
            ("headrace-source-offset", str(rec.offset).encode()),
        ]
        return Outgoing(self.topics.dlq, rec.value, rec.key, None, headers)

    # -- io.headrace.run.start ---------------------------------------------

    def _start(self, rec: IngressRecord, ev: Incoming) -> Outgoing:
        data = _object(ev, START_FIELDS, "{workflow, version?, input, run_id?}")
        workflow = data.get("workflow")
        if not isinstance(workflow, str) or not workflow:
            raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"{START_TYPE}: `workflow` must be a string")
        version = data.get("version")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 1
        ):
            raise Rejected(
                ErrorCode.BAD_CLOUDEVENT,
                f"{START_TYPE}: `version` must be a positive integer or absent, got {version!r}",
            )
        run_id = data.get("run_id")
        if run_id is None:
            run_id = start_run_id(ev.source, ev.id)
        _check_run_id(run_id, START_TYPE)
        deployed = self._definition(workflow, version)
        run_input = data.get("input", {})
        self._check_input(deployed, run_input)
        command_id = "ce:" + derived_id("start", ev.source, ev.id, "command")
        return self._start_command(rec, ev, deployed, run_id, command_id, run_input)

    def _start_command(
        self,
        rec: IngressRecord,
        ev: Incoming,
        deployed: Deployed,
        run_id: str,
        command_id: str,
        run_input: Any,
    ) -> Outgoing:
        if self.drains is not None:
            refusal = self.drains.refusal(ev.tenant, deployed.definition.type)
            if refusal is not None:
                raise Rejected(ErrorCode.DRAINING, refusal)
        command = Command(
            command_id=command_id,
            tenant=ev.tenant,
            run_id=run_id,
            type=CommandType.StartRun,
            time=rec.timestamp_ms if rec.timestamp_ms > 0 else int(self.clock() * 1000),
            payload={
                "workflow": deployed.definition.type,
                "version": deployed.definition.version,
                "input": run_input,
                "parent": None,
            },
            causation_id=ev.id,
            traceparent=ev.traceparent,
        )
        return command_message(command, self.routing)

    def _definition(self, workflow: str, version: int | None) -> Deployed:
        deployed = self.catalog.get(workflow, version)
        if deployed is None and self._catch_up():
            deployed = self.catalog.get(workflow, version)
        if deployed is not None:
            return deployed
        latest = self.catalog.get(workflow)
        if latest is None:
            raise Rejected(
                ErrorCode.DEFINITION_NOT_FOUND,
                f"workflow {workflow!r} is not deployed — deploy it (`headrace deploy FILE`) "
                "and send the event again",
            )
        raise Rejected(
            ErrorCode.DEFINITION_NOT_FOUND,
            f"workflow {workflow}@{version} is not deployed (latest is "
            f"{workflow}@{latest.definition.version}) — omit `version` for the latest",
        )

    def _check_input(self, deployed: Deployed, value: Any) -> None:
        if deployed.definition.input_schema is None:
            return
        key = (deployed.definition.type, deployed.definition.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = input_validator(deployed)
        check_input(deployed, value, validator)

    def _catch_up(self) -> bool:
        """Read the catalog up to the topic's end, once per batch; True if it was done now."""
        if self._caught_up:
            return False
        self._caught_up = True
        try:
            self.catalog.wait_current(self.catch_up_timeout)
        except HeadraceError as exc:
            log.warning("definitions catalog not current: %s", exc)
        return True

    # -- io.headrace.run.signal --------------------------------------------

    def _signal(self, rec: IngressRecord, ev: Incoming) -> Outgoing:
        data = _object(ev, SIGNAL_FIELDS, "{name, run_id | correlation, data}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"{SIGNAL_TYPE}: `name` must be a string")
        run_id, correlation = data.get("run_id"), data.get("correlation")
        if (run_id is None) == (correlation is None):
            raise Rejected(
                ErrorCode.BAD_CLOUDEVENT,
                f"{SIGNAL_TYPE}: give exactly one of `run_id` (one run) and `correlation` "
                "(every run waiting on that key)",
            )
        if run_id is not None:
            _check_run_id(run_id, SIGNAL_TYPE)
        elif not isinstance(correlation, str) or not correlation:
            raise Rejected(
                ErrorCode.BAD_CLOUDEVENT, f"{SIGNAL_TYPE}: `correlation` must be a string"
            )
        body = signal_body(
            signal_id="ce:" + derived_id("signal", ev.source, ev.id),
            signal=name,
            tenant=ev.tenant,
            data=data.get("data"),
            time=rec.timestamp_ms if rec.timestamp_ms > 0 else int(self.clock() * 1000),
            run_id=run_id,
            correlation=correlation if run_id is None else None,
            traceparent=ev.traceparent,
        )
        return signal_message(body, self.routing)

    # -- triggers ------------------------------------------------------------

    def _trigger(self, rec: IngressRecord, ev: Incoming) -> Routed:
        candidates = self.triggers.for_type(ev.type)
        if not candidates and self._catch_up():
            candidates = self.triggers.for_type(ev.type)
        if not candidates:
            raise Rejected(
                ErrorCode.UNROUTABLE,
                f"no route for CloudEvent type {ev.type!r}: it is neither {START_TYPE} nor "
                f"{SIGNAL_TYPE}, and no deployed definition has a trigger on it",
            )
        view = ev.as_json()
        messages: list[Outgoing] = []
        started = 0
        for t in candidates:
            if t.source is not None and t.source != ev.source:
                continue
            try:
                if t.filter is not None and not t.filter.test(view):
                    continue
                messages.append(self._trigger_start(rec, ev, t, view))
                started += 1
            except (Rejected, HeadraceError) as exc:
                message = f"{t.name}: {exc.message}"
                messages.append(self.dead_letter(rec, exc.code, message))
        if not messages:
            return Routed(Outcome.IGNORED, [])
        return Routed(Outcome.TRIGGERED if started else Outcome.DEAD_LETTERED, messages)

    def _trigger_start(
        self, rec: IngressRecord, ev: Incoming, t: Trigger, view: dict[str, Any]
    ) -> Outgoing:
        run_input = t.input.evaluate(view) if t.input is not None else ev.data
        run_id: Any = None
        if t.run_id is not None:
            run_id = t.run_id.evaluate(view)
            if isinstance(run_id, int | float) and not isinstance(run_id, bool):
                run_id = str(run_id)
        if run_id is None:
            run_id = trigger_run_id(ev.source, ev.id, t.workflow)
        _check_run_id(run_id, "the trigger's run_id expression")
        deployed = self.catalog.get(t.workflow, t.version)
        if deployed is None:  # the index is built from the catalog; cannot happen
            raise Rejected(ErrorCode.DEFINITION_NOT_FOUND, f"{t.workflow}@{t.version} vanished")
        self._check_input(deployed, run_input)
        command_id = "ce:" + derived_id("trigger", ev.source, ev.id, t.workflow, "command")
        return self._start_command(rec, ev, deployed, run_id, command_id, run_input)


def input_validator(deployed: Deployed) -> Any:
    """A compiled validator of the definition's ``input_schema`` (None when it has none)."""
    schema = deployed.definition.input_schema
    if schema is None:
        return None
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise Rejected(
            ErrorCode.INPUT_INVALID,
            f"{deployed.key}: input_schema is not a valid JSON Schema ({exc.message}) — "
            "deploy a fixed version",
        ) from None
    return cls(schema)


def check_input(deployed: Deployed, value: Any, validator: Any = None) -> None:
    """Raise :class:`Rejected` (``INPUT_INVALID``) unless ``value`` fits the input schema.

    Same rules as the orchestrator's check when the run starts (``jsonschema``,
    the schema's own draft, formats not asserted), so what passes here passes there.
    """
    if validator is None:
        validator = input_validator(deployed)
        if validator is None:
            return
    if validator.is_valid(value):
        return
    error = best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise Rejected(
            ErrorCode.INPUT_INVALID,
            f"input for {deployed.key} does not match its input_schema at {where}: {error.message}",
        )


def _object(ev: Incoming, allowed: frozenset[str], shape: str) -> dict[str, Any]:
    data = ev.data
    if not isinstance(data, dict):
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"{ev.type}: data must be a JSON object {shape}, got {type(data).__name__}",
        )
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"{ev.type}: unknown field(s) {', '.join(unknown)} in data; expected {shape}",
        )
    return data


def _check_run_id(run_id: Any, what: str) -> None:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"{what}: run id {run_id!r} is not valid (letters, digits and _.:@/+=-, starting "
            "with a letter or digit, at most 200)",
        )
