"""The HTTP connector's pure parts: Retry-After, the circuit breaker, templates, config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.connectors.http.breaker import Breakers, State
from headrace.connectors.http.config import compile_call
from headrace.connectors.http.retry_after import MAX_RETRY_AFTER_MS, parse_retry_after
from headrace.connectors.http.templates import parse_template
from headrace.sdk import NonRetryable

NOW = int(datetime(2026, 10, 21, 7, 0, tzinfo=UTC).timestamp() * 1000)

# -- Retry-After -----------------------------------------------------------------------


@given(st.integers(0, 10**7))
def test_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == min(seconds * 1000, MAX_RETRY_AFTER_MS)


@given(st.integers(-86_400, 86_400))
def test_retry_after_http_date_is_relative_to_now_and_never_negative(offset_s: int) -> None:
    when = datetime.fromtimestamp(NOW / 1000, UTC) + timedelta(seconds=offset_s)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == max(0, offset_s * 1000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        (" 12 ", 12_000),
        ("Wed, 21 Oct 2026 07:00:30 GMT", 30_000),
        ("Wednesday, 21-Oct-26 07:01:00 GMT", 60_000),  # RFC 850, obsolete but allowed
        ("Wed Oct 21 07:00:05 2026", 5_000),  # asctime: no zone, GMT by definition
    ],
)
def test_retry_after_forms(value: str | None, expected: int | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# -- circuit breaker -------------------------------------------------------------------


class Clock:
    ms = 0

    def __call__(self) -> int:
        return self.ms


def test_breaker_opens_fails_fast_probes_once_and_closes() -> None:
    clock = Clock()
    b = Breakers(failures_to_open=2, cooldown_ms=1000, clock=clock)
    assert b.admit("h") is None
    b.failed("h")
    assert b.admit("h") is None
    b.failed("h")
    assert b.state("h") is State.OPEN
    clock.ms = 400
    assert b.admit("h") == 600
    clock.ms = 1000
    assert b.admit("h") is None  # the probe
    assert b.state("h") is State.HALF_OPEN
    assert b.admit("h") == 1000  # others wait while it is out
    b.succeeded("h")
    assert b.state("h") is State.CLOSED and b.admit("h") is None


def test_a_success_resets_the_consecutive_count() -> None:
    b = Breakers(failures_to_open=3, cooldown_ms=10, clock=Clock())
    for _ in range(10):
        b.failed("h")
        b.failed("h")
        b.succeeded("h")
    assert b.state("h") is State.CLOSED


def test_a_released_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    b = Breakers(failures_to_open=1, cooldown_ms=0, clock=clock)
    b.failed("h")
    assert b.admit("h") is None
    b.released("h")  # e.g. the probe got a 429: no verdict
    assert b.admit("h") is None


@given(st.lists(st.sampled_from(["ok", "fail", "tick"]), max_size=80))
def test_breaker_never_admits_while_open_and_cooling(ops: list[str]) -> None:
    clock = Clock()
    b = Breakers(failures_to_open=3, cooldown_ms=100, clock=clock)
    consecutive = 0
    for op in ops:
        if op == "tick":
            clock.ms += 40
            continue
        wait = b.admit("h")
        c = b.circuit("h")
        if wait is not None:
            assert c.state in (State.OPEN, State.HALF_OPEN)
            assert wait > 0
            continue
        if op == "ok":
            b.succeeded("h")
            consecutive = 0
            assert b.state("h") is State.CLOSED
        else:
            was_probe = c.state is State.HALF_OPEN
            b.failed("h")
            consecutive += 1
            if was_probe or consecutive >= 3:
                assert b.state("h") is State.OPEN
                assert b.admit("h") == 100  # a fresh cool-down from now


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        Breakers(failures_to_open=0)


# -- templates -------------------------------------------------------------------------

scalars = st.one_of(st.text(max_size=20), st.integers(), st.booleans())


@given(scalars)
def test_a_placeholder_value_is_one_percent_encoded_segment(value: Any) -> None:
    out = parse_template("https://h/x/{v}/y").expand({"v": value})
    segment = out.removeprefix("https://h/x/").removesuffix("/y")
    assert "/" not in segment and "?" not in segment and "#" not in segment
    expected = (
        {True: "true", False: "false"}.get(value, str(value))
        if isinstance(value, bool)
        else str(value)
    )
    assert unquote(segment) == expected


def test_template_forms() -> None:
    t = parse_template("{+base}/orders/{order.id}?q={{literal}}")
    assert [p.name for p in t.placeholders] == ["base", "order.id"]
    assert t.expand({"base": "https://h:1/v1", "order": {"id": "a b"}}) == (
        "https://h:1/v1/orders/a%20b?q={literal}"
    )
    assert parse_template("{n}").expand({"n": 2.0}) == "2"
    assert parse_template("no placeholders").expand({}) == "no placeholders"


@pytest.mark.parametrize("bad", ["{", "}", "{ x }", "{a..b}", "x{}"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="template"):
        parse_template(bad)


@pytest.mark.parametrize("value", [None, {"a": 1}, [1]])
def test_missing_null_or_structured_values_fail_the_task(value: Any) -> None:
    with pytest.raises(NonRetryable) as info:
        parse_template("/x/{v}").expand({"v": value})
    assert info.value.code == "http.template"


# -- config ----------------------------------------------------------------------------


def test_config_defaults() -> None:
    call = compile_call({"url": "http://h/x"})
    assert call.config.method == "POST" and call.sends_body and call.timeout_s == 30
    assert call.config.idempotency_header == "Idempotency-Key"
    assert not compile_call({"url": "http://h/x", "method": "GET"}).sends_body
    assert not compile_call({"url": "http://h/x", "body": None}).sends_body
    assert compile_call({"url": "http://h/x", "method": "GET", "body": "."}).sends_body


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({}, "exactly one of 'url' and 'openapi'"),
        ({"url": "http://h", "openapi": {"document": "d", "operation": "o"}}, "exactly one"),
        ({"url": "http://h", "timeout": "soon"}, "timeout"),
        ({"url": "http://h", "surprise": 1}, "surprise"),
        ({"url": "http://h/{"}, "stray"),
        ({"url": "http://h", "body": "[.a"}, "does not compile"),
        ({"url": "http://h", "auth": {"type": "basic", "password_env": "P"}}, "username"),
        (
            {"url": "http://h", "auth": {"type": "basic", "username": "u", "password": "p"}},
            "password_env",
        ),
        ({"url": "http://h", "auth": {"type": "header", "name": "k", "value": "v"}}, "value_env"),
        ({"url": "http://h", "auth": {"type": "oauth"}}, "auth"),
    ],
)
def test_bad_configs_fail_the_task_and_say_what_to_fix(config: dict[str, Any], needle: str) -> None:
    with pytest.raises(NonRetryable) as info:
        compile_call(config)
    assert info.value.code == "http.config"
    assert needle in info.value.message
