"""A circuit breaker per host: stop hammering a service that is down.

After ``failures`` consecutive failed calls to a host (5xx, timeouts,
connection errors — not 4xx, which are the caller's fault, and not 429, which
says "slow down", not "broken") the circuit *opens*: calls fail fast, without
touching the network, for ``cooldown_ms``. Then it is *half-open*: one probe
call goes through; if it succeeds the circuit closes, if it fails the circuit
opens for another cool-down. Calls arriving while the probe is out fail fast
too, so a recovering service sees one request, not a stampede.

The breaker is plain logic over an injected monotonic clock (milliseconds), so
it is tested without waiting; the connector keeps one :class:`Breakers` for the
process. It is not thread-safe: the connector calls it from its event loop only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Circuit:
    """The breaker of one host."""

    failures_to_open: int
    cooldown_ms: int
    state: State = State.CLOSED
    consecutive_failures: int = 0
    opened_at: int = 0
    probe_out: bool = False

    def admit(self, now: int) -> int | None:
        """None if a call may go ahead now; else milliseconds until the next probe may."""
        if self.state is State.CLOSED:
            return None
        if self.state is State.OPEN:
            left = self.opened_at + self.cooldown_ms - now
            if left > 0:
                return left
            self.state = State.HALF_OPEN
            self.probe_out = False
        if self.probe_out:
            # The probe is still out; its verdict decides, so wait about a cool-down.
            return max(1, self.cooldown_ms)
        self.probe_out = True
        return None

    def succeeded(self) -> None:
        self.state = State.CLOSED
        self.consecutive_failures = 0
        self.probe_out = False

    def failed(self, now: int) -> None:
        self.consecutive_failures += 1
        if self.state is State.HALF_OPEN or self.consecutive_failures >= self.failures_to_open:
            self.state = State.OPEN
            self.opened_at = now
            self.probe_out = False

    def released(self) -> None:
        """The admitted call ended with neither verdict (e.g. a 4xx): free the probe slot."""
        self.probe_out = False


@dataclass
class Breakers:
    """One :class:`Circuit` per host, created on first use."""

    failures_to_open: int = 5
    cooldown_ms: int = 30_000
    clock: Callable[[], int] = field(default=lambda: 0)
    circuits: dict[str, Circuit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.failures_to_open < 1:
            raise ValueError(f"failures_to_open must be >= 1, got {self.failures_to_open}")
        if self.cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0, got {self.cooldown_ms}")

    def circuit(self, host: str) -> Circuit:
        c = self.circuits.get(host)
        if c is None:
            c = self.circuits[host] = Circuit(self.failures_to_open, self.cooldown_ms)
        return c

    def admit(self, host: str) -> int | None:
        """None: call ``host``; a number: it is open, retry after that many ms."""
        return self.circuit(host).admit(self.clock())

    def succeeded(self, host: str) -> None:
        self.circuit(host).succeeded()

    def failed(self, host: str) -> None:
        self.circuit(host).failed(self.clock())

    def released(self, host: str) -> None:
        self.circuit(host).released()

    def state(self, host: str) -> State:
        return self.circuit(host).state
