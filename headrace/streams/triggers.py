"""The triggers of deployed definitions, compiled and indexed by CloudEvent type.

A CloudEvent whose type is neither a start nor a signal starts a run of every
deployed workflow type whose *latest* version has a matching trigger (see
docs/ingress.md). :class:`TriggerIndex` keeps that lookup current: the catalog
tells it when something was deployed (from the catalog's reader thread), and
the index is rebuilt on the router's thread the next time it is asked.
Expressions are compiled once per ``type@version``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from headrace.core.expr import Expression, compile_expr
from headrace.definitions import Deployed
from headrace.errors import HeadraceError

log = logging.getLogger("headrace.router")


class _Catalog(Protocol):
    def all(self) -> list[Deployed]: ...


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger of one definition version, its expressions compiled."""

    workflow: str
    version: int
    index: int
    event_type: str
    source: str | None
    filter: Expression | None
    input: Expression | None
    run_id: Expression | None

    @property
    def name(self) -> str:
        return f"trigger {self.index} of {self.workflow}@{self.version}"


class TriggerIndex:
    """Event type → the triggers of the latest version of every workflow type."""

    def __init__(self, catalog: _Catalog) -> None:
        self.catalog = catalog
        self._dirty = True
        self._by_type: dict[str, list[Trigger]] = {}
        self._compiled: dict[tuple[str, int], list[Trigger]] = {}

    def deployed(self, deployed: Deployed) -> None:
        """Something was deployed: rebuild before the next lookup (safe from any thread)."""
        self._dirty = True

    def for_type(self, event_type: str) -> list[Trigger]:
        if self._dirty:
            self._rebuild()
        return self._by_type.get(event_type, [])

    def _rebuild(self) -> None:
        # Cleared first: a deploy read while rebuilding marks the index dirty again.
        self._dirty = False
        latest: dict[str, Deployed] = {}
        for d in self.catalog.all():
            cur = latest.get(d.definition.type)
            if cur is None or d.definition.version > cur.definition.version:
                latest[d.definition.type] = d
        by_type: dict[str, list[Trigger]] = {}
        for d in latest.values():
            for t in self._compile(d):
                by_type.setdefault(t.event_type, []).append(t)
        self._by_type = by_type

    def _compile(self, deployed: Deployed) -> list[Trigger]:
        key = (deployed.definition.type, deployed.definition.version)
        done = self._compiled.get(key)
        if done is not None:
            return done
        out: list[Trigger] = []
        for i, t in enumerate(deployed.definition.triggers):
            try:
                out.append(
                    Trigger(
                        key[0],
                        key[1],
                        i,
                        t.event_type,
                        t.source,
                        compile_expr(t.filter) if t.filter else None,
                        compile_expr(t.input) if t.input else None,
                        compile_expr(t.run_id) if t.run_id else None,
                    )
                )
            except HeadraceError as exc:
                # The deploy-time validator compiles these too; only a definition
                # published around it can get here.
                log.error("%s@%d trigger %d is ignored: %s", *key, i, exc)
        self._compiled[key] = out
        return out
