"""docs/dsl.md documents every rule, every step kind and every built-in error code."""

from __future__ import annotations

from pathlib import Path

from headrace.core.decider.errors import BUILTIN_CODES
from headrace.core.dsl.lint import rules_markdown
from headrace.core.dsl.pydantic_errors import KINDS

DOC = Path(__file__).resolve().parents[3] / "docs" / "dsl.md"


def test_rules_table_matches_the_registry() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- rules:begin -->\n") + len("<!-- rules:begin -->\n")
    end = text.index("<!-- rules:end -->")
    assert text[start:end] == rules_markdown(), (
        "the rules table in docs/dsl.md is out of date — replace the lines between the "
        "rules:begin/rules:end markers with `headrace lint --rules --format markdown`"
    )


def test_every_step_kind_has_a_section_with_an_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    for kind in KINDS:
        section = text.split(f"\n### {kind}\n", 1)
        assert len(section) == 2, f"docs/dsl.md has no '### {kind}' section"
        body = section[1].split("\n### ", 1)[0]
        assert f"kind: {kind}" in body, f"the {kind} section has no example"


def test_every_builtin_error_code_is_listed() -> None:
    text = DOC.read_text(encoding="utf-8")
    for code in BUILTIN_CODES:
        assert f"| `{code}` |" in text, f"docs/dsl.md does not list the error code {code!r}"
