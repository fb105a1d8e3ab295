"""Deployed workflow definitions: the compacted ``definitions`` topic as a global table.

Each record is keyed ``type@version`` and holds JSON (readable with any Kafka
tool)::

    {"type": "order", "version": 3, "digest": "<sha256 hex>",
     "definition": {...normalized document...}, "source": "<the file as written>",
     "deployed_at": 1764000000000, "deployed_by": "alice"}

``type@version`` is immutable. :func:`deploy` refuses a different body under a
deployed version, and re-deploying the same body is a no-op. Should two deploys
race, every reader keeps the *first* record of a key in the log, so all workers
agree on which body won; the loser notices (it reads its own record back), is
refused, and re-publishes the winner's record so that compaction — which keeps
the *last* record of a key — keeps the winner too.

:class:`DefinitionCatalog` reads the whole topic at start and follows it in a
background thread; every service that needs definitions holds one.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from headrace.compacted import CompactedReader, Record
from headrace.core.dsl.model import Definition
from headrace.core.envelope import canonical_json
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings

log = logging.getLogger("headrace.definitions")


def digest_of(definition: Definition) -> str:
    """sha256 of the normalized document: what the author wrote, minus formatting and comments."""
    body = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Deployed:
    """One deployed ``type@version``."""

    definition: Definition
    digest: str
    source: str
    deployed_at: int
    deployed_by: str
    offset: int = -1

    @property
    def key(self) -> str:
        return self.definition.key

    @classmethod
    def from_record(cls, value: bytes, offset: int = -1) -> Deployed:
        doc = json.loads(value)
        definition = Definition.model_validate(doc["definition"])
        return cls(
            definition,
            doc["digest"],
            doc.get("source", ""),
            int(doc.get("deployed_at", 0)),
            doc.get("deployed_by", ""),
            offset,
        )

    def to_record(self) -> bytes:
        return json.dumps(
            {
                "type": self.definition.type,
                "version": self.definition.version,
                "digest": self.digest,
                "definition": self.definition.model_dump(
                    mode="json", by_alias=True, exclude_unset=True
                ),
                "source": self.source,
                "deployed_at": self.deployed_at,
                "deployed_by": self.deployed_by,
            },
            ensure_ascii=False,
        ).encode()


class DefinitionCatalog:
    """Every deployed definition, kept current by a background reader of the topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.definitions
        self._by_key: dict[tuple[str, int], Deployed] = {}
        self._latest: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Deployed], None]] = []
        self._reader = CompactedReader(settings, self.topic, self._apply, name="definitions")

    # -- lookups -----------------------------------------------------------

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None:
        """``type@version``, or the latest version of ``type`` when ``version`` is None."""
        with self._lock:
            if version is None:
                version = self._latest.get(workflow_type)
                if version is None:
                    return None
            return self._by_key.get((workflow_type, version))

    def all(self) -> list[Deployed]:
        with self._lock:
            return sorted(
                self._by_key.values(), key=lambda d: (d.definition.type, -d.definition.version)
            )

    def on_deployed(self, listener: Callable[[Deployed], None]) -> None:
        """Call ``listener`` for every definition read from now on (and those already read)."""
        with self._lock:
            self._listeners.append(listener)
            known = list(self._by_key.values())
        for d in known:
            listener(d)

    # -- life cycle --------------------------------------------------------

    def start(self, wait: float | None = 30.0) -> DefinitionCatalog:
        """Start following the topic; with ``wait``, return once caught up with its end."""
        self._reader.start(wait)
        return self

    def stop(self) -> None:
        self._reader.stop()

    def __enter__(self) -> DefinitionCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_current(self, timeout: float = 30.0) -> None:
        """Block until everything in the topic as of now has been read."""
        self._reader.wait_current(timeout)

    def wait_position(self, position: int, timeout: float = 30.0) -> None:
        """Block until the records before offset ``position`` have been read."""
        self._reader.wait_position(position, timeout)

    def _apply(self, rec: Record) -> None:
        value, offset, key = rec.value, rec.offset, rec.key
        deployed: Deployed | None = None
        if value is not None:
            try:
                deployed = Deployed.from_record(value, offset)
            except Exception as exc:
                log.error(
                    "definitions: record at offset %d (key %r) is unreadable and ignored: %s",
                    offset,
                    key,
                    exc,
                )
        listeners: list[Callable[[Deployed], None]] = []
        with self._lock:
            if deployed is not None:
                k = (deployed.definition.type, deployed.definition.version)
                first = self._by_key.get(k)
                if first is None:
                    self._by_key[k] = deployed
                    if deployed.definition.version > self._latest.get(k[0], 0):
                        self._latest[k[0]] = deployed.definition.version
                    listeners = list(self._listeners)
                elif first.digest != deployed.digest:
                    log.warning(
                        "definitions: %s at offset %d differs from the first deployed body "
                        "(offset %d) and is ignored — definitions are immutable",
                        deployed.key,
                        offset,
                        first.offset,
                    )
        if deployed is not None:
            for listener in listeners:
                listener(deployed)


@dataclass(frozen=True, slots=True)
class DeployOutcome:
    key: str
    status: str  # "deployed" | "unchanged"
    digest: str


def deploy(
    settings: Settings,
    items: Iterable[tuple[Definition, str]],
    *,
    by: str | None = None,
    now_ms: int | None = None,
    catalog: DefinitionCatalog | None = None,
    timeout: float = 30.0,
) -> list[DeployOutcome]:
    """Publish validated definitions; refuse changed bodies under a deployed version.

    Every item is checked before anything is published, so a refused deploy
    publishes nothing (unless it loses a race with a concurrent deploy, which
    is detected after the fact and refused just the same).
    """
    own = catalog is None
    cat = catalog or DefinitionCatalog(settings).start(wait=timeout)
    try:
        todo = list(items)
        seen: dict[str, str] = {}
        conflicts: list[str] = []
        plan: list[tuple[Definition, str, str, bool]] = []
        for definition, source in todo:
            dig = digest_of(definition)
            if seen.setdefault(definition.key, dig) != dig:
                conflicts.append(
                    f"{definition.key} is given twice with different bodies in this deploy"
                )
                continue
            existing = cat.get(definition.type, definition.version)
            if existing is not None and existing.digest != dig:
                conflicts.append(_conflict(definition, existing, cat))
                continue
            plan.append((definition, source, dig, existing is None))
        if conflicts:
            raise HeadraceError(ErrorCode.DEFINITION_CONFLICT, "; ".join(conflicts))
        producer = make_producer(settings, "headrace-deploy")
        user = by or _user()
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        outcomes: list[DeployOutcome] = []
        written: dict[str, tuple[Definition, str, int]] = {}
        for definition, source, dig, new in plan:
            if not new or definition.key in written:
                outcomes.append(DeployOutcome(definition.key, "unchanged", dig))
                continue
            record = Deployed(definition, dig, source, at, user)
            msg = produce_sync(
                producer, settings.topics.definitions, record.to_record(), key=definition.key
            )
            written[definition.key] = (definition, dig, msg.offset() or 0)
            outcomes.append(DeployOutcome(definition.key, "deployed", dig))
        _check_races(settings, cat, producer, written, timeout)
        return outcomes
    finally:
        if own:
            cat.stop()


def _conflict(definition: Definition, existing: Deployed, cat: DefinitionCatalog) -> str:
    latest = cat.get(definition.type)
    newest = latest.definition.version if latest is not None else definition.version
    return (
        f"{definition.key} is already deployed with a different body (by "
        f"{existing.deployed_by or 'someone'}); a deployed version is immutable — bump "
        f"`version` (latest is {newest})"
    )


def _check_races(
    settings: Settings,
    cat: DefinitionCatalog,
    producer: Any,
    written: dict[str, tuple[Definition, str, int]],
    timeout: float,
) -> None:
    """Read our records back: a concurrent deploy of another body may have come first."""
    if not written:
        return
    cat.wait_position(max(off for _, _, off in written.values()) + 1, timeout)
    lost: list[str] = []
    for key, (definition, dig, _) in written.items():
        winner = cat.get(definition.type, definition.version)
        if winner is None or winner.digest == dig:
            continue
        # Compaction keeps the last record of a key; make it the winner's again.
        produce_sync(producer, settings.topics.definitions, winner.to_record(), key=key)
        lost.append(
            f"{key} was deployed concurrently with a different body (by "
            f"{winner.deployed_by or 'someone'}), which came first and stands; bump `version`"
        )
    if lost:
        raise HeadraceError(ErrorCode.DEFINITION_CONFLICT, "; ".join(lost))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def as_jsonable(deployed: Deployed) -> dict[str, Any]:
    """What `headrace definitions show --format json` prints."""
    return json.loads(deployed.to_record())
