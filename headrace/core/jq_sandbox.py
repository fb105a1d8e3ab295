"""The static half of the expression sandbox: what a jq program may contain.

libjq cannot be interrupted mid-evaluation, so anything that could loop
forever, read outside its input or depend on the machine must be refused
before it is compiled. :func:`check_safe` scans the program's tokens —
string interpolations included — and refuses those constructs;
:func:`free_variables` lists the ``$names`` a program reads without binding
them. Both are re-exported by :mod:`headrace.core.expr`, the one interface the
rest of headrace uses.
"""

from __future__ import annotations

import re

from headrace.errors import ErrorCode, HeadraceError

_FORBIDDEN_WORDS = {
    "import": "modules are not available to workflow expressions",
    "include": "modules are not available to workflow expressions",
    "input": "expressions read only their input value",
    "inputs": "expressions read only their input value",
    "repeat": "`repeat` can loop forever; iterate over a bounded list instead",
    "while": "`while` can loop forever; iterate over a bounded list instead",
    "until": "`until` can loop forever; iterate over a bounded list instead",
    "infinite": "`infinite` leads to unbounded loops",
    "halt": "`halt` would stop the engine's evaluator",
    "halt_error": "`halt_error` would stop the engine's evaluator",
    "input_filename": "no files here",
    "localtime": "depends on the machine's time zone; use gmtime",
    "strflocaltime": "depends on the machine's time zone; use strftime",
    "debug": "writes to the engine's stderr",
    "stderr": "writes to the engine's stderr",
    "get_search_list": "modules are not available",
    "modulemeta": "modules are not available",
    "get_prog_origin": "modules are not available",
    "get_jq_origin": "modules are not available",
    "input_line_number": "expressions read only their input value",
    "$__loc__": "reveals engine internals",
    "$__prog_args": "reveals engine internals",
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _lex(src: str, i: int, out: list[str], interpolation: bool) -> int:
    """Append the tokens of ``src[i:]`` to ``out``; return where scanning stopped.

    Tokens keep what the safety check needs: ``.name`` (field access), ``$name``
    (variables), ``@name`` (formats), bare identifiers (calls and keywords) and
    single punctuation characters. A string literal becomes ``""`` followed by
    the tokens of its ``\\(...)`` interpolations in parentheses, so code hidden in
    a string is checked like any other. Comments end at the line's end, which
    is conservative: newer libjq continues a comment after a trailing
    backslash, so we may check text that jq ignores, never the reverse.
    """
    depth = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = src.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == '"':
            out.append('""')
            i = _lex_string(src, i + 1, out)
        elif interpolation and c == ")" and depth == 0:
            return i + 1
        elif "0" <= c <= "9" or (c == "." and i + 1 < n and "0" <= src[i + 1] <= "9"):
            m = _NUMBER.match(src, i)
            assert m is not None
            out.append("0")
            i = m.end()
        elif c == "." and src.startswith("..", i):
            out.append("..")
            i += 2
        elif c in ".$@" and (m := _IDENT.match(src, i + 1)) is not None:
            out.append(c + m.group())
            i = m.end()
        elif (m := _IDENT.match(src, i)) is not None:
            out.append(m.group())
            i = m.end()
        else:
            if interpolation and c == "(":
                depth += 1
            elif interpolation and c == ")":
                depth -= 1
            out.append(c)
            i += 1
    return n


def _lex_string(src: str, i: int, out: list[str]) -> int:
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            if src.startswith("(", i + 1):
                out.append("(")
                i = _lex(src, i + 2, out, interpolation=True)
                out.append(")")
            else:
                i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    return n


def _tokens(source: str) -> list[str]:
    out: list[str] = []
    _lex(source, 0, out, interpolation=False)
    return out


def _object_keys(toks: list[str]) -> set[int]:
    """Indices of identifiers that name an object key (``{input: 1}``, ``{until}``).

    jq object values cannot hold a bare ``,``, so inside ``{}`` a token right
    after ``{`` or ``,`` is always in key position.
    """
    keys: set[int] = set()
    stack: list[str] = []
    for i, t in enumerate(toks):
        if t in "([{":
            stack.append(t)
        elif t in ")]}":
            if stack:
                stack.pop()
        elif stack and stack[-1] == "{" and i > 0 and toks[i - 1] in ("{", ","):
            keys.add(i)
    return keys


def _refuse(source: str, why: str) -> HeadraceError:
    return HeadraceError(ErrorCode.EXPRESSION_INVALID, f"{source!r}: {why}")


def _check_def(source: str, toks: list[str], i: int, keys: set[int], outer: tuple[str, ...]) -> int:
    """Check the ``def`` at ``toks[i]`` (and the defs nested in it); return the index after it."""
    n = len(toks)
    name = toks[i + 1] if i + 1 < n else ""
    names = (*outer, name)
    j = i + 2
    depth = 0
    while j < n and not (toks[j] == ":" and depth == 0):  # skip the parameter list
        depth += {"(": 1, ")": -1}.get(toks[j], 0)
        j += 1
    j += 1
    depth = 0
    while j < n:
        t = toks[j]
        if t == "def":
            j = _check_def(source, toks, j, keys, names)
            continue
        if t in "([{":
            depth += 1
        elif t in ")]}":
            depth -= 1
            if depth < 0:
                return j
        elif t == ";" and depth == 0:
            return j + 1
        elif t in names and j not in keys:
            raise _refuse(
                source,
                f"recursive `def {t}` refused — libjq cannot be interrupted, so expressions "
                "must terminate; use reduce/foreach over a list",
            )
        j += 1
    return j


def check_safe(source: str) -> None:
    """Raise ``HeadraceError(EXPRESSION_INVALID)`` if ``source`` may not be run by the engine.

    Refused: the words in ``_FORBIDDEN_WORDS`` used as calls (``.input`` as a
    field or ``{until: 1}`` as a key is fine), ``recurse`` with arguments, any
    ``$__…`` variable, and any ``def`` whose body (nested defs included) calls
    itself or an enclosing def. String interpolations are checked too.
    """
    toks = _tokens(source)
    keys = _object_keys(toks)
    for i, tok in enumerate(toks):
        if i in keys:
            continue
        why = _FORBIDDEN_WORDS.get(tok)
        if why is None and tok.startswith("$__"):
            why = "reveals engine internals"
        if why:
            raise _refuse(source, f"`{tok}` refused — {why}")
        if tok == "recurse" and i + 1 < len(toks) and toks[i + 1] == "(":
            raise _refuse(
                source, "`recurse(f)` can loop forever — use `..` (recurse over the data)"
            )
    i = 0
    while i < len(toks):
        if toks[i] == "def" and i not in keys:
            i = _check_def(source, toks, i, keys, ())
        else:
            i += 1


_JQ_WHERE = re.compile(r"\s*at <top-level>, line (\d+), column (\d+):?$")


def explain_compile_error(raw: str, prefix_len: int, source: str) -> str:
    """libjq's first error line, with its position made relative to ``source``.

    The program is ``prelude + source + "\\n)"``; positions on its first line
    are shifted by the prelude, and anything past the source means "at the end".
    """
    first = raw.split("\n")[0].removeprefix("jq: error: ")
    m = _JQ_WHERE.search(first)
    if m is None:
        return first
    what = first[: m.start()]
    line, col = int(m.group(1)), int(m.group(2))
    if line == 1:
        col -= prefix_len
    if line > source.count("\n") + 1 or (
        line == source.count("\n") + 1 and col > len(source.split("\n")[-1])
    ):
        if "unexpected ')'" in what:  # our wrapper's closing parenthesis
            return "syntax error: the expression ends too early (something is missing at its end)"
        return f"{what} at the end of the expression"
    return f"{what} (line {line}, column {col})" if "\n" in source else f"{what} (column {col})"


def free_variables(source: str) -> list[str]:
    """The ``$names`` that ``source`` reads but does not bind itself, in order of use.

    Bindings are ``E as $x`` / ``as [$a, {b: $c}]`` (reduce, foreach and
    destructuring included), ``label $x`` and ``def f($x)``. A token scan, not
    a parser: a name bound anywhere counts as bound everywhere, so this may
    miss an undefined variable (libjq's compile catches it) but never invents one.
    """
    toks = _tokens(source)
    bound: set[str] = set()
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "as" or (t == "?" and toks[i + 1 : i + 3] == ["/", "/"]):
            depth = 0
            j = i + 1
            while j < len(toks):
                u = toks[j]
                if u in "[{(" and not (u == "(" and depth == 0):
                    depth += 1
                elif u in "]})":
                    depth -= 1
                elif depth == 0 and u in ("|", "("):
                    break
                elif u.startswith("$"):
                    bound.add(u)
                j += 1
        elif t == "label" and i + 1 < len(toks):
            bound.add(toks[i + 1])
        elif t == "def":
            j = i + 2
            while j < len(toks) and toks[j] != ":":
                if toks[j].startswith("$"):
                    bound.add(toks[j])
                j += 1
        i += 1
    out: list[str] = []
    for t in toks:
        if t.startswith("$") and t not in bound and t[1:] not in out and t != "$ENV":
            out.append(t[1:])
    return out
