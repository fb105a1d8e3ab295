"""Property tests of the signal protocol: the service's addresses against a model orchestrator.

A small world: runs wait (an ``await`` per address of the wait, as the outbox
writes them), users send signals to correlation keys and to runs, waits time
out, the orchestrator takes offers in any order (a wait takes the first
``DeliverSignal`` it sees while it waits), every message may be re-sent (the
orchestrator's replays, a router's retries). Each address sees its messages in
order, as a Kafka partition does; everything else interleaves freely.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.core.outbox import signal_address
from headrace.services.signals.address import Address, Delivery, Rules, Tally
from headrace.services.signals.messages import SignalOp, WaitOp

RULES = Rules(ttl=10**12, dedupe_window=10**12, remembered=10**6)
RUNS = ["r0", "r1", "r2"]
KEYS = ["k0", "k1", "r1"]  # "r1" is also a run id: its address is shared
NAMES = ["go", "stop"]


@dataclass
class WaitInfo:
    op: WaitOp
    pending: bool = True
    took: str | None = None


@dataclass
class World:
    addresses: dict[str, Address] = field(default_factory=dict)
    queues: dict[str, deque[WaitOp | SignalOp]] = field(default_factory=dict)
    offers: list[Delivery] = field(default_factory=list)
    waits: dict[str, WaitInfo] = field(default_factory=dict)
    signals: dict[str, SignalOp] = field(default_factory=dict)
    seq: int = 0
    tally: Tally = field(default_factory=Tally)

    def post(self, op: WaitOp | SignalOp) -> None:
        self.queues.setdefault(op.address, deque()).append(op)

    def copies(self, op: WaitOp) -> list[WaitOp]:
        out = [op]
        if op.correlation != op.run_id:
            out.append(
                WaitOp(
                    op.op,
                    op.wait_id,
                    op.tenant,
                    op.run_id,
                    op.signal,
                    op.correlation,
                    "run",
                    0,
                    op.reason,
                    op.signal_id,
                )
            )
        return out

    # -- the actors --------------------------------------------------------------------

    def wait(self, run: str, key: str, name: str) -> None:
        wid = f"{run}:{len(self.waits)}"
        op = WaitOp("await", wid, "acme", run, name, key, "correlation")
        self.waits[wid] = WaitInfo(op)
        for c in self.copies(op):
            self.post(c)

    def send(self, by_run: bool, target: str, name: str) -> None:
        sid = f"s{len(self.signals)}"
        op = SignalOp(
            sid, name, "acme", sid, 0, target if by_run else None, None if by_run else target
        )
        self.signals[sid] = op
        self.post(op)

    def end(self, info: WaitInfo, reason: str, signal_id: str | None = None) -> None:
        info.pending = False
        info.took = signal_id
        w = info.op
        cancel = WaitOp(
            "cancel_wait",
            w.wait_id,
            w.tenant,
            w.run_id,
            w.signal,
            w.correlation,
            "correlation",
            0,
            reason,
            signal_id,
        )
        for c in self.copies(cancel):
            self.post(c)

    def service(self, i: int) -> bool:
        busy = [name for name, q in self.queues.items() if q]
        if not busy:
            return False
        name = busy[i % len(busy)]
        op = self.queues[name].popleft()
        a = self.addresses.setdefault(name, Address(name))
        self.seq += 1
        if isinstance(op, SignalOp):
            self.offers += a.signal(op, self.seq, 0, RULES, self.tally)
        elif op.op == "await":
            self.offers += a.await_(op, self.seq, 0, RULES, self.tally)
        else:
            self.offers += a.cancel(op, 0, RULES, self.tally)
        return True

    def orchestrate(self, i: int) -> bool:
        if not self.offers:
            return False
        d = self.offers.pop(i % len(self.offers))
        info = self.waits[d.wait.id]
        if info.pending:
            self.end(info, "received", d.signal.id)
        return True

    def time_out(self, i: int) -> None:
        pending = [w for w in self.waits.values() if w.pending]
        if pending:
            self.end(pending[i % len(pending)], "timed_out")

    def resend(self, i: int) -> None:
        """A message written again: a signal by its producer, an await/cancel by a replay."""
        if i % 2 and self.signals:
            self.post(list(self.signals.values())[i % len(self.signals)])
        elif self.waits:
            info = list(self.waits.values())[i % len(self.waits)]
            for c in self.copies(info.op):
                self.post(c)
            if not info.pending:
                self.end(info, "received" if info.took else "timed_out", info.took)

    def drain(self) -> None:
        while self.service(0) or self.orchestrate(0):
            pass


ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("wait"), st.sampled_from(RUNS), st.sampled_from(KEYS), st.sampled_from(NAMES)
        ),
        st.tuples(st.just("send"), st.booleans(), st.integers(0, 2), st.sampled_from(NAMES)),
        st.tuples(st.just("service"), st.integers(0, 5)),
        st.tuples(st.just("orchestrate"), st.integers(0, 5)),
        st.tuples(st.just("timeout"), st.integers(0, 5)),
        st.tuples(st.just("resend"), st.integers(0, 9)),
    ),
    max_size=80,
)


def run_world(actions: list[tuple]) -> World:
    w = World()
    for a in actions:
        match a:
            case ("wait", run, key, name):
                w.wait(run, key, name)
            case ("send", by_run, i, name):
                w.send(by_run, RUNS[i] if by_run else KEYS[i], name)
            case ("service", i):
                w.service(i)
            case ("orchestrate", i):
                w.orchestrate(i)
            case ("timeout", i):
                w.time_out(i)
            case ("resend", i):
                w.resend(i)
    w.drain()
    return w


def matches(s: SignalOp, wait: WaitOp) -> bool:
    if s.signal != wait.signal:
        return False
    return s.run_id == wait.run_id if s.run_id is not None else s.correlation == wait.correlation


@settings(max_examples=400, deadline=None)
@given(ACTIONS)
def test_no_signal_is_lost_none_is_taken_twice_and_none_waits_beside_a_free_wait(
    actions: list[tuple],
) -> None:
    w = run_world(actions)
    taken: dict[str, list[str]] = {}
    for wid, info in w.waits.items():
        if info.took is not None:
            taken.setdefault(info.took, []).append(wid)
    buffered = {b.id: b for a in w.addresses.values() for b in a.buffer.values()}
    for sid, s in w.signals.items():
        # every signal was taken by a wait, or is still kept for the next one
        assert (sid in taken) != (sid in buffered), (sid, taken.get(sid), sid in buffered)
        if s.run_id is not None:
            assert len(taken.get(sid, [])) <= 1  # a run signal is for one wait
        for wid in taken.get(sid, []):
            assert matches(s, w.waits[wid].op)
    for b in buffered.values():
        assert b.offered == []  # quiescent: nothing on offer
    for info in w.waits.values():
        if not info.pending:
            continue
        # the service knows every pending wait at each of its addresses, free
        for c in w.copies(info.op):
            registered = w.addresses[c.address].waits.get(info.op.wait_id)
            assert registered is not None and registered.holding is None
        # and keeps no signal the wait would take
        for b in buffered.values():
            s = w.signals[b.id]
            addr = s.address
            assert not (matches(s, info.op) and addr in {c.address for c in w.copies(info.op)})
    # and no wait that ended
    for a in w.addresses.values():
        for wid in a.waits:
            assert w.waits[wid].pending


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.just(0)),
            st.tuples(st.just("wait"), st.just(0)),
            st.tuples(st.just("service"), st.integers(0, 3)),
            st.tuples(st.just("orchestrate"), st.integers(0, 3)),
            st.tuples(st.just("timeout"), st.just(0)),
            st.tuples(st.just("resend"), st.integers(0, 9)),
        ),
        max_size=60,
    )
)
def test_one_run_waiting_again_and_again_takes_signals_in_the_order_they_were_sent(
    actions: list[tuple],
) -> None:
    w = World()
    order: list[str] = []
    for a in actions:
        match a:
            case ("send", _):
                w.send(False, "r0", "go")
            case ("wait", _):
                if not any(i.pending for i in w.waits.values()):  # one wait at a time
                    w.wait("r0", "r0", "go")
                    while w.service(0):  # the service catches up: the offer is made
                        pass
            case ("service", i):
                w.service(i)
            case ("orchestrate", i):
                w.orchestrate(i)
            case ("timeout", _):
                w.time_out(0)
            case ("resend", i):
                w.resend(i)
    w.drain()
    order = [i.took for i in w.waits.values() if i.took is not None]
    assert order == sorted(order, key=lambda sid: int(sid[1:]))
    assert len(order) == len(set(order))
    assert signal_address("acme", "r0") in w.addresses or not w.signals
