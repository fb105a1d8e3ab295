"""The signal service's decisions for one address (pure: no broker)."""

from __future__ import annotations

from headrace.core.envelope import CommandType
from headrace.services.signals.address import Address, Rules, Tally
from headrace.services.signals.messages import SignalOp, WaitOp

RULES = Rules(ttl=60_000, dedupe_window=600_000, remembered=100)


def await_op(wait_id: str, run_id: str, corr: str | None = None, name: str = "go") -> WaitOp:
    return WaitOp("await", wait_id, "acme", run_id, name, corr or run_id, "correlation")


def cancel_op(w: WaitOp, reason: str, signal_id: str | None = None) -> WaitOp:
    return WaitOp(
        "cancel_wait",
        w.wait_id,
        w.tenant,
        w.run_id,
        w.signal,
        w.correlation,
        w.index,
        0,
        reason,
        signal_id,
    )


def sig(
    signal_id: str,
    corr: str | None = None,
    run_id: str | None = None,
    name: str = "go",
    time: int = 0,
    data: object = None,
) -> SignalOp:
    return SignalOp(signal_id, name, "acme", data, time, run_id, corr)


def test_a_signal_nobody_waits_for_is_buffered_and_the_next_await_takes_it() -> None:
    a, t = Address("acme/k"), Tally()
    assert a.signal(sig("s1", corr="k", data={"x": 1}), 1, 0, RULES, t) == []
    assert t.buffered == 1
    w = await_op("r1:3", "r1", "k")
    (d,) = a.await_(w, 2, 10, RULES, t)
    cmd = d.command(10)
    assert (cmd.command_id, cmd.type, cmd.tenant, cmd.run_id) == (
        "s1/r1:3",
        CommandType.DeliverSignal,
        "acme",
        "r1",
    )
    assert cmd.payload == {"signal": "go", "data": {"x": 1}, "wait_id": "r1:3", "signal_id": "s1"}
    # on offer: kept until the run says it took it
    assert list(a.buffer) == [1] and a.buffer[1].offered == ["r1:3"]
    assert a.cancel(cancel_op(w, "received", "s1"), 20, RULES, t) == []
    assert a.buffer == {} and a.waits == {} and "s1" in a.seen and t.taken == 1


def test_a_correlation_signal_goes_to_every_free_wait_a_run_signal_to_one() -> None:
    a, t = Address("acme/k"), Tally()
    for i in range(3):
        a.await_(await_op(f"r{i}:1", f"r{i}", "k"), i, 0, RULES, t)
    a.await_(await_op("r0:2", "r0", "k", name="other"), 5, 0, RULES, t)
    ds = a.signal(sig("s", corr="k"), 10, 0, RULES, t)
    assert sorted(d.wait.id for d in ds) == ["r0:1", "r1:1", "r2:1"]
    b = Address("acme/r7")
    b.await_(await_op("r7:1", "r7"), 1, 0, RULES, t)
    b.await_(await_op("r7:2", "r7"), 2, 0, RULES, t)
    (d,) = b.signal(sig("s", run_id="r7"), 3, 0, RULES, t)
    assert d.wait.id == "r7:1"  # the oldest wait of the run


def test_a_wait_registered_by_run_only_takes_signals_addressed_to_the_run() -> None:
    # r1 waits on correlation "order-5"; its run address holds the wait's second copy
    a, t = Address("acme/r1"), Tally()
    run_copy = WaitOp("await", "r1:4", "acme", "r1", "go", "order-5", "run")
    a.await_(run_copy, 1, 0, RULES, t)
    assert a.signal(sig("c", corr="r1"), 2, 0, RULES, t) == []  # a correlation key "r1"
    (d,) = a.signal(sig("r", run_id="r1"), 3, 0, RULES, t)
    assert d.wait.id == "r1:4"


def test_buffered_signals_reach_consecutive_waits_in_arrival_order() -> None:
    a, t = Address("acme/k"), Tally()
    for i in range(3):
        a.signal(sig(f"s{i}", corr="k", data=i), 10 + i, 0, RULES, t)
    got = []
    for i in range(3):
        w = await_op(f"r:{i}", "r", "k")
        (d,) = a.await_(w, 20 + i, 0, RULES, t)
        got.append(d.signal.data)
        a.cancel(cancel_op(w, "received", d.signal.id), 0, RULES, t)
    assert got == [0, 1, 2] and a.buffer == {}


def test_an_offer_not_taken_goes_back_in_its_place_and_on_to_the_next_wait() -> None:
    a, t = Address("acme/k"), Tally()
    w1 = await_op("r1:1", "r1", "k")
    a.await_(w1, 1, 0, RULES, t)
    assert len(a.signal(sig("s1", corr="k"), 2, 0, RULES, t)) == 1
    a.signal(sig("s2", corr="k"), 3, 0, RULES, t)  # w1 holds an offer: s2 waits
    assert a.buffer[3].offered == []
    w2 = await_op("r2:1", "r2", "k")
    (d2,) = a.await_(w2, 4, 0, RULES, t)
    assert d2.signal.id == "s2"
    # w1 timed out before the orchestrator saw the offer: s1 comes back, first in line
    assert a.cancel(cancel_op(w1, "timed_out"), 5, RULES, t) == []
    assert t.returned == 1 and list(a.buffer) == [2, 3]
    (d3,) = a.await_(await_op("r3:1", "r3", "k"), 6, 0, RULES, t)
    assert d3.signal.id == "s1"


def test_a_wait_that_took_another_signal_hands_the_offer_back() -> None:
    # the same wait was offered s1 at its correlation address and took a broadcast first
    a, t = Address("acme/k"), Tally()
    w = await_op("r1:1", "r1", "k")
    a.signal(sig("s1", corr="k"), 1, 0, RULES, t)
    a.await_(w, 2, 0, RULES, t)
    a.cancel(cancel_op(w, "received", "broadcast-9"), 3, RULES, t)
    assert a.buffer[1].offered == [] and t.returned == 1


def test_duplicates_change_nothing() -> None:
    a, t = Address("acme/k"), Tally()
    a.signal(sig("s1", corr="k"), 1, 0, RULES, t)
    assert a.signal(sig("s1", corr="k"), 2, 0, RULES, t) == []
    assert list(a.buffer) == [1]
    w = await_op("r1:1", "r1", "k")
    assert len(a.await_(w, 3, 0, RULES, t)) == 1
    assert a.await_(w, 4, 0, RULES, t) == []  # a replayed await
    a.cancel(cancel_op(w, "received", "s1"), 5, RULES, t)
    assert a.await_(w, 6, 0, RULES, t) == []  # a replayed await after its cancel
    assert a.signal(sig("s1", corr="k"), 7, 0, RULES, t) == []  # re-sent after it was taken
    assert a.waits == {} and a.buffer == {} and t.duplicates == 4


def test_expiry_drops_buffered_signals_but_not_those_on_offer() -> None:
    a, t = Address("acme/k"), Tally()
    a.signal(sig("old", corr="k", time=0), 1, 0, RULES, t)
    a.signal(sig("new", corr="k", time=50_000), 2, 50_000, RULES, t)
    w = await_op("r1:1", "r1", "k")
    (d,) = a.await_(w, 3, 55_000, RULES, t)
    assert d.signal.id == "old"
    a.expire(70_000, RULES, t)  # "old" is past its ttl of 60 s, but on offer
    assert list(a.buffer) == [1, 2] and t.expired == 0
    a.expire(110_000, RULES, t)
    assert list(a.buffer) == [1] and t.expired == 1
    # an offer handed back after its expiry is dropped, not buffered again
    a.cancel(cancel_op(w, "timed_out"), 130_000, RULES, t)
    assert a.buffer == {} and t.expired == 2 and t.returned == 1


def test_the_record_survives_a_round_trip_and_knows_its_next_expiry() -> None:
    a, t = Address("acme/k"), Tally()
    a.signal(sig("s1", corr="k", time=5, data={"deep": [1, "ü"]}), 1, 5, RULES, t)
    a.await_(await_op("r1:1", "r1", "k", name="other"), 2, 5, RULES, t)
    a.applied = 2
    b = Address.from_bytes("acme/k", a.to_bytes())
    assert b == a
    assert b.next_expiry() == 5 + RULES.ttl


def test_memory_is_bounded() -> None:
    rules = Rules(ttl=1000, dedupe_window=10_000, remembered=5)
    a, t = Address("acme/k"), Tally()
    for i in range(20):
        w = await_op(f"r:{i}", "r", "k")
        a.await_(w, i, 0, rules, t)
        a.cancel(cancel_op(w, "cancelled"), 0, rules, t)
    assert len(a.ended) == 5 and list(a.ended)[-1] == "r:19"
