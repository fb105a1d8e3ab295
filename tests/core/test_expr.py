"""Plain paths (``.a.b``, ``$input.x``, ``$run.id``) skip libjq and must answer as jq does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from headrace.core.expr import Context, compile_expr
from headrace.errors import ErrorCode, HeadraceError

KEYS = st.sampled_from(["a", "b", "id"])
# libjq keeps numbers as IEEE doubles: integers beyond 2**53 come back rounded
# from jq, while a plain path hands the value over untouched (docs/dsl.md).
SAFE_INTS = st.integers(-(2**53), 2**53)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | SAFE_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
RUN = {"id": "r1", "tenant": "t1", "type": "order", "version": 3}


def _answer(source: str, data: Any, ctx: Context) -> tuple[str, Any]:
    try:
        return "ok", compile_expr(source, ["item"]).evaluate(data, ctx)
    except HeadraceError as exc:
        assert exc.code is ErrorCode.EXPRESSION_FAILED
        return "error", None


@given(
    st.sampled_from(["", "$input", "$run", "$item"]),
    st.lists(KEYS, max_size=3),
    st.dictionaries(KEYS, json_values, max_size=3) | json_values,
    st.dictionaries(KEYS, json_values, max_size=3) | json_values,
)
def test_a_plain_path_answers_as_jq_does(root: str, keys: list[str], data: Any, other: Any) -> None:
    source = root + "".join(f".{k}" for k in keys)
    assume(source)  # a lone `.` goes to jq
    fast = compile_expr(source, ["item"])
    assert fast.is_plain_path
    ctx = Context(0, other, RUN, {"item": other})
    assert _answer(source, data, ctx) == _answer(f"{source} | .", data, ctx)


def test_run_itself_is_a_copy_and_its_fields_are_read_in_place() -> None:
    run = dict(RUN)
    ctx = Context(0, None, run, None)
    whole = compile_expr("$run").evaluate(None, ctx)
    assert whole == run and whole is not run
    assert compile_expr("$run.id").evaluate(None, ctx) == "r1"
    assert compile_expr("$run.missing.deeper").evaluate(None, ctx) is None


@pytest.mark.parametrize("data", [1, "text", [1, 2], True])
def test_indexing_what_is_not_an_object_fails(data: Any) -> None:
    with pytest.raises(HeadraceError) as info:
        compile_expr(".a").evaluate(data)
    assert info.value.code is ErrorCode.EXPRESSION_FAILED
