"""Hypothesis strategies for envelopes (shared by the codec and chain tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from headrace.core.envelope import Command, CommandType, Event, EventType

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
OPTIONAL_TEXT = st.none() | st.text()

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
hashes = st.binary(min_size=32, max_size=32)


@st.composite
def events(draw: st.DrawFn, *, seq: int | None = None, tenant: str | None = None) -> Event:
    return Event(
        tenant=tenant if tenant is not None else draw(st.text()),
        run_id=draw(st.text()),
        workflow_type=draw(st.text()),
        workflow_version=draw(INT32),
        seq=seq if seq is not None else draw(st.integers(1, 2**63 - 1)),
        type=draw(st.sampled_from(EventType)),
        time=draw(INT64),
        causation_id=draw(st.text()),
        payload=draw(payloads),
        correlation_id=draw(OPTIONAL_TEXT),
        idempotency_key=draw(OPTIONAL_TEXT),
        traceparent=draw(OPTIONAL_TEXT),
        event_id=draw(st.text(min_size=1)),
        prev_hash=draw(hashes),
        hash=draw(hashes),
    )


commands = st.builds(
    Command,
    command_id=st.text(),
    tenant=st.text(),
    run_id=st.text(),
    type=st.sampled_from(CommandType),
    time=INT64,
    payload=payloads,
    causation_id=OPTIONAL_TEXT,
    correlation_id=OPTIONAL_TEXT,
    traceparent=OPTIONAL_TEXT,
)


@st.composite
def runs(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[Event]:
    """Unsealed events of one run, seq 1..n."""
    n = draw(st.integers(min_size, max_size))
    tenant = draw(st.text(min_size=1, max_size=6))
    run_id = draw(st.text(min_size=1, max_size=6))
    return [
        Event(
            tenant=tenant,
            run_id=run_id,
            workflow_type="order",
            workflow_version=1,
            seq=i,
            type=draw(st.sampled_from(EventType)),
            time=1_700_000_000_000 + i,
            causation_id=f"cmd-{i}",
            payload=draw(payloads),
        )
        for i in range(1, n + 1)
    ]
