"""Turn pydantic's validation errors into findings a workflow author can act on.

pydantic says *what* failed at a location such as
``('steps', 0, 'task', 'retires')``; this module says it in the author's terms
(``steps[0].retires``, "step 'charge' (task): unknown field 'retires' — did you
mean 'retry'?"), names the missing field, lists the step kinds, and drops the
union tags pydantic inserts into locations.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from headrace.core.dsl import model as m
from headrace.core.dsl.findings import Finding, Path, Severity, format_path
from headrace.core.dsl.registry import declare

UNKNOWN_FIELD = declare(
    "HR003", "unknown-field", Severity.ERROR, "a mapping has a field its model does not define"
)
MISSING_FIELD = declare("HR004", "missing-field", Severity.ERROR, "a required field is absent")
UNKNOWN_KIND = declare(
    "HR005", "unknown-kind", Severity.ERROR, "a step has no `kind`, or one that does not exist"
)
INVALID_VALUE = declare(
    "HR006", "invalid-value", Severity.ERROR, "a field has the wrong type or breaks a constraint"
)

STEP_CLASSES: dict[str, type[m.StepBase]] = {
    typing.cast(str, get_args(cls.model_fields["kind"].annotation)[0]): cls
    for cls in (
        m.TaskStep,
        m.ChoiceStep,
        m.ParallelStep,
        m.ForeachStep,
        m.WaitStep,
        m.WaitSignalStep,
        m.ApprovalStep,
        m.CallStep,
        m.SpawnStep,
        m.SetStep,
        m.SucceedStep,
        m.FailStep,
    )
}
KINDS = tuple(STEP_CLASSES)

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from a field type."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _field_names(cls: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in cls.model_fields.items()]


def _field_type(cls: type[BaseModel], key: str) -> Any:
    for name, f in cls.model_fields.items():
        if key in (name, f.alias):
            return f.annotation
    return None


def _resolve(loc: tuple[str | int, ...]) -> tuple[Path, type[BaseModel] | None]:
    """The document path of ``loc`` (union tags removed) and the model its last part is in."""
    tp: Any = m.Definition
    path: list[str | int] = []
    owner: type[BaseModel] | None = None
    for el in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            path.append(el)
            tp = _field_type(tp, el) if isinstance(el, str) else None
            continue
        origin = get_origin(tp)
        if origin is list:
            path.append(el)
            tp = get_args(tp)[0]
            owner = None
            continue
        if origin in (Union, types.UnionType) and isinstance(el, str) and el in STEP_CLASSES:
            tp = STEP_CLASSES[el]
            continue
        if origin is dict:
            path.append(el)
            tp = get_args(tp)[1]
            owner = None
            continue
        path.append(el)
        tp = None
        owner = None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        owner = tp  # the error is about the model itself (missing field, model validator)
    return tuple(path), owner


def _step_at(data: Any, path: Path) -> dict[str, Any] | None:
    """The innermost raw step mapping on ``path`` (a mapping inside a ``steps`` list)."""
    found = None
    node = data
    for i, part in enumerate(path):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if (
            isinstance(node, dict)
            and isinstance(part, int)
            and i > 0
            and path[i - 1] in ("steps", "compensations")
        ):
            found = node
    return found


def _context(data: Any, path: Path) -> str:
    step = _step_at(data, path)
    if step is None:
        return ""
    name = step.get("name")
    kind = step.get("kind")
    label = f"step {name!r}" if isinstance(name, str) else "unnamed step"
    return f"{label} ({kind}): " if isinstance(kind, str) and kind in STEP_CLASSES else f"{label}: "


def _what(owner: type[BaseModel] | None) -> str:
    if owner is None:
        return "this mapping"
    if owner is m.Definition:
        return "a definition"
    for kind, cls in STEP_CLASSES.items():
        if cls is owner:
            return f"a {kind} step"
    return f"a {owner.__name__}"


def _unknown_field(key: str, owner: type[BaseModel] | None) -> str:
    msg = f"unknown field {key!r} in {_what(owner)}"
    if owner is None:
        return msg + " — remove it"
    names = _field_names(owner)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"{msg} — did you mean {close[0]!r}?"
    if issubclass(owner, m.StepBase):
        every = sorted({f for cls in STEP_CLASSES.values() for f in _field_names(cls)})
        near = difflib.get_close_matches(key, every, n=1, cutoff=0.75)
        if near:
            kinds = [k for k, cls in STEP_CLASSES.items() if near[0] in _field_names(cls)]
            meant = "" if near[0] == key else f"did you mean {near[0]!r}? "
            return (
                f"{msg} — {meant}{near[0]!r} is a field of {', '.join(kinds)} steps; "
                "remove it or change `kind`"
            )
    return f"{msg} — the fields are: {', '.join(sorted(names))}"


def _one(err: Any, data: Any) -> Finding:
    kind = err["type"]
    path, owner = _resolve(tuple(err["loc"]))
    ctx = err.get("ctx") or {}
    where = _context(data, path)
    value = err.get("input")
    last = path[-1] if path else None
    label = repr(last) if isinstance(last, str) else format_path(path)
    if kind == "extra_forbidden" and isinstance(last, str):
        return UNKNOWN_FIELD.finding(where + _unknown_field(last, owner), path)
    if kind == "missing":
        if where:
            return MISSING_FIELD.finding(f"{where}missing required field {last!r} — add it", path)
        parent = _resolve(tuple(err["loc"])[:-1])[1]
        return MISSING_FIELD.finding(f"{_what(parent)} needs the field {last!r} — add it", path)
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        close = difflib.get_close_matches(tag, KINDS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return UNKNOWN_KIND.finding(
            f"{where}unknown kind {tag!r} — {hint}the kinds are: {', '.join(KINDS)}",
            (*path, "kind"),
        )
    if kind == "union_tag_not_found":
        return UNKNOWN_KIND.finding(
            f"{where}no 'kind' — add 'kind: <one of {', '.join(KINDS)}>'", path
        )
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        return INVALID_VALUE.finding(
            f"{where}{label} is {value!r}; expected {expected}{hint}", path
        )
    if kind in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        text = str(exc) if exc is not None else err["msg"]
        return INVALID_VALUE.finding(f"{where}{text}", path)
    if kind == "string_pattern_mismatch":
        return INVALID_VALUE.finding(f"{where}{_pattern_message(last, value, ctx)}", path)
    if kind in _TYPE_WORDS:
        return INVALID_VALUE.finding(
            f"{where}{label} must be {_TYPE_WORDS[kind]}, not {_describe(value)}", path
        )
    if kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        return INVALID_VALUE.finding(
            f"{where}{label} is {_describe(value)} but must be {word} {ctx.get(key)}", path
        )
    if kind == "too_short" and last in ("steps", "branches", "choices"):
        return INVALID_VALUE.finding(f"{where}{label} needs at least one entry", path)
    return INVALID_VALUE.finding(f"{where}{label}: {err['msg']} (got {_describe(value)})", path)


def _pattern_message(field: Any, value: Any, ctx: dict[str, Any]) -> str:
    pattern = ctx.get("pattern")
    if pattern == m.NAME_PATTERN:
        return (
            f"{field!r} is {value!r}, not a valid name — start with a letter, then up to 63 "
            "letters, digits, '_', '.' or '-'"
        )
    if pattern == m.TYPE_PATTERN:
        return (
            f"{field!r} is {value!r}, not a valid workflow type — lowercase letters, digits, "
            "'_', '.' and '-', starting with a letter"
        )
    if field == "as":
        return f"'as' is {value!r}; it must be an identifier such as 'item' or 'applicant'"
    return f"{field!r} is {value!r}, which does not match {pattern}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float | str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def translate(exc: ValidationError, data: Any) -> list[Finding]:
    """One finding per problem pydantic found, in document order.

    A misspelt required field is one problem, though pydantic sees two (an
    unknown field and a missing one): the "missing" finding is dropped when an
    unknown field beside it is a close spelling of the missing name.
    """
    errors = exc.errors()
    misspelt: set[Path] = set()
    for err in errors:
        if err["type"] != "extra_forbidden":
            continue
        path, owner = _resolve(tuple(err["loc"]))
        if owner is not None and isinstance(path[-1], str):
            for name in difflib.get_close_matches(path[-1], _field_names(owner), n=1, cutoff=0.6):
                misspelt.add((*path[:-1], name))
    out: list[Finding] = []
    seen: set[tuple[str, Path, str]] = set()
    for err in errors:
        f = _one(err, data)
        if f.rule == MISSING_FIELD.id and f.path in misspelt:
            continue
        key = (f.rule, f.path, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


__all__ = ["KINDS", "STEP_CLASSES", "translate"]
