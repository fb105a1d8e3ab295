"""Deployed workflow definitions: the compacted ``definitions`` topic as a global table.

Each record is keyed ``type@version`` and holds JSON (readable with any Kafka
tool)::

    {"type": "order", "version": 3, "digest": "<sha256 hex>",
     "definition": {...normalized document...}, "source": "<the file as written>",
     "deployed_at": 1764000000000, "deployed_by": "alice"}

``type@version`` is immutable. :func:`deploy` refuses a different body under a
deployed version, and re-deploying the same body is a no-op. Should two deploys
race, every reader keeps the *first* record of a key in the log, so all workers
agree on which body won.

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

from confluent_kafka import KafkaError, TopicPartition

from headrace.core.dsl.model import Definition
from headrace.core.envelope import canonical_json
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_consumer, make_producer, produce_sync
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
        self._position = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._listeners: list[Callable[[Deployed], None]] = []

    # -- lookups -----------------------------------------------------------

    def get(self, workflow_type: str, version: int | None = None) -> Deployed | None:
        """``type@version``, or the latest version of ``type`` when ``version`` is None."""
        with self._cond:
            if version is None:
                version = self._latest.get(workflow_type)
                if version is None:
                    return None
            return self._by_key.get((workflow_type, version))

    def all(self) -> list[Deployed]:
        with self._cond:
            return sorted(
                self._by_key.values(), key=lambda d: (d.definition.type, -d.definition.version)
            )

    def on_deployed(self, listener: Callable[[Deployed], None]) -> None:
        """Call ``listener`` for every definition read from now on (and those already read)."""
        with self._cond:
            self._listeners.append(listener)
            known = list(self._by_key.values())
        for d in known:
            listener(d)

    # -- life cycle --------------------------------------------------------

    def start(self, wait: float | None = 30.0) -> DefinitionCatalog:
        """Start following the topic; with ``wait``, return once caught up with its end."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="definitions", daemon=True)
            self._thread.start()
        if wait is not None:
            self.wait_current(wait)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> DefinitionCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_current(self, timeout: float = 30.0) -> None:
        """Block until everything in the topic as of now has been read."""
        consumer = make_consumer(self.settings, "headrace-definitions-probe")
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=timeout, cached=False
            )
        except Exception as exc:
            raise HeadraceError(
                ErrorCode.KAFKA_UNAVAILABLE,
                f"cannot read the end of {self.topic} at {self.settings.bootstrap}: {exc} — "
                "is Kafka up and were the topics created (`headrace topics ensure`)?",
            ) from exc
        finally:
            consumer.close()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._position < high:
                if self._error is not None:
                    raise self._error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HeadraceError(
                        ErrorCode.KAFKA_TIMEOUT,
                        f"definitions not read up to offset {high} of {self.topic} "
                        f"within {timeout:.0f} s (at {self._position})",
                    )
                self._cond.wait(min(left, 0.5))

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings,
            "headrace-definitions-reader",
            enable_partition_eof=True,
            fetch_wait_max_ms=50,
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        with self._cond:
                            self._position = max(self._position, msg.offset() or 0)
                            self._cond.notify_all()
                        continue
                    if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        self._stop.wait(0.5)
                        continue
                    log.warning("definitions reader: %s", err)
                    continue
                self._apply(msg.value(), msg.offset() or 0, msg.key())
        except Exception as exc:  # surfaced to waiters, never swallowed
            log.exception("definitions reader stopped")
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            consumer.close()

    def _apply(self, value: bytes | None, offset: int, key: bytes | None) -> None:
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
        with self._cond:
            self._position = offset + 1
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
            self._cond.notify_all()
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
) -> list[DeployOutcome]:
    """Publish validated definitions; refuse changed bodies under a deployed version."""
    own = catalog is None
    cat = catalog or DefinitionCatalog(settings).start()
    outcomes: list[DeployOutcome] = []
    try:
        producer = make_producer(settings, "headrace-deploy")
        user = by or _user()
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        for definition, source in items:
            dig = digest_of(definition)
            existing = cat.get(definition.type, definition.version)
            if existing is not None:
                if existing.digest != dig:
                    raise HeadraceError(
                        ErrorCode.DEFINITION_CONFLICT,
                        f"{definition.key} is already deployed with a different body "
                        f"(by {existing.deployed_by or 'someone'}); a deployed version is "
                        f"immutable — bump `version` (latest is "
                        f"{cat.get(definition.type).definition.version})",  # type: ignore[union-attr]
                    )
                outcomes.append(DeployOutcome(definition.key, "unchanged", dig))
                continue
            record = Deployed(definition, dig, source, at, user)
            produce_sync(
                producer, settings.topics.definitions, record.to_record(), key=definition.key
            )
            outcomes.append(DeployOutcome(definition.key, "deployed", dig))
        return outcomes
    finally:
        if own:
            cat.stop()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def as_jsonable(deployed: Deployed) -> dict[str, Any]:
    """What `headrace definitions show --format json` prints."""
    return json.loads(deployed.to_record())
