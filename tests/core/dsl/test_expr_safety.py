"""The expression sandbox refuses what could hang or leak, and only that."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.core.expr import check_safe, compile_expr, free_variables
from headrace.errors import ErrorCode, HeadraceError

REFUSED = [
    ("input", "`input` refused"),
    ("[inputs]", "`inputs` refused"),
    ("repeat(1)", "`repeat` refused"),
    ("[limit(3; repeat(1))]", "`repeat` refused"),
    ("until(. > 3; . + 1)", "`until` refused"),
    ("while(true; .)", "`while` refused"),
    ("recurse(.a)", "`recurse(f)` can loop forever"),
    ("recurse (.a; . != null)", "`recurse(f)` can loop forever"),
    ('import "m" as m; .', "`import` refused"),
    ('include "m"; .', "`include` refused"),
    ("$__loc__", "reveals engine internals"),
    ("$__d", "reveals engine internals"),
    ("localtime", "time zone"),
    ("debug", "stderr"),
    ("modulemeta", "modules"),
    ("input_line_number", "`input_line_number` refused"),
    ("def f: f; f", "recursive `def f`"),
    ("def f(g): g | f(g); f(.)", "recursive `def f`"),
    ("def a: def b: a; b; a", "recursive `def a`"),
    ("def a: def b: 1; a; a", "recursive `def a`"),
    ('"\\(input)"', "`input` refused"),
    ('"a \\("b \\(repeat(1))")"', "`repeat` refused"),
    ("{a: input}", "`input` refused"),
    ("{(input): 1}", "`input` refused"),
    ("# harmless\nrepeat(.)", "`repeat` refused"),
]

ALLOWED = [
    ".input",
    ".order.until",
    '.["input"]',
    "{input: 1, until: 2}",
    "{input}",
    ". as {input: $x} | $x",
    "recurse",
    "[..]",
    "def f: 1; def g: f; g",
    "def f(x): x; f(1)",
    '"total: \\(.a + 1)"',
    "# repeat(1) is only a comment\n.a",
    "reduce .[] as $x (0; . + $x)",
    "1.5 + .5",
    "$input.id",
    "now",
    "env",
]


@pytest.mark.parametrize(("source", "why"), REFUSED)
def test_refused(source: str, why: str) -> None:
    with pytest.raises(HeadraceError) as info:
        check_safe(source)
    assert info.value.code is ErrorCode.EXPRESSION_INVALID
    assert why in info.value.message


@pytest.mark.parametrize("source", ALLOWED)
def test_allowed_and_compiles(source: str) -> None:
    check_safe(source)
    compile_expr(source)


def test_field_named_like_a_forbidden_word_evaluates() -> None:
    expr = compile_expr("{i: .input, u: .until}")
    assert expr.evaluate({"input": 1, "until": 2}) == {"i": 1, "u": 2}


def test_now_and_env_are_deterministic() -> None:
    from headrace.core.expr import Context

    assert compile_expr("[now, env, $ENV]").evaluate(None, Context(now_ms=1500)) == [1.5, {}, {}]


def test_compile_errors_point_into_the_expression_not_the_prelude() -> None:
    with pytest.raises(HeadraceError) as info:
        compile_expr(".a + )")
    assert info.value.message.endswith("syntax error, unexpected ')' (column 6)")
    with pytest.raises(HeadraceError) as info:
        compile_expr(".a +")
    assert "ends too early" in info.value.message
    with pytest.raises(HeadraceError) as info:
        compile_expr("$nope")
    assert "$nope is not defined (column 1)" in info.value.message


@pytest.mark.parametrize(
    ("source", "free"),
    [
        ("$a + $b", ["a", "b"]),
        ("reduce .[] as $x (0; . + $x + $y)", ["y"]),
        (". as [$p, {q: $r}] | $p + $r + $s", ["s"]),
        (". as [$a] ?// $b | $a", []),
        ("label $out | 1", []),
        ("def f($v): $v + $w; 1", ["w"]),
        ("{$z}", ["z"]),
        ('"\\($q)"', ["q"]),
        ("$ENV.HOME", []),
        ("$input.a", ["input"]),
    ],
)
def test_free_variables(source: str, free: list[str]) -> None:
    assert free_variables(source) == free


@given(st.text(max_size=40))
def test_check_safe_never_crashes(source: str) -> None:
    try:
        check_safe(source)
    except HeadraceError as exc:
        assert exc.code is ErrorCode.EXPRESSION_INVALID


@given(st.text(alphabet=st.sampled_from(list('.$"\\()[]{}|;:, a#\n')), max_size=30))
def test_compile_expr_only_ever_raises_expression_invalid(source: str) -> None:
    try:
        compile_expr(source)
    except HeadraceError as exc:
        assert exc.code is ErrorCode.EXPRESSION_INVALID
