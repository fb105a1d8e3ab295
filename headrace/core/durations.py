"""Durations as written in definitions and on the command line."""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_SHORT = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_ISO = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


@lru_cache(maxsize=4096)
def parse_duration(text: str) -> int:
    """Milliseconds in ``text``: ``500ms``, ``30s``, ``1h30m``, ``7d``, ``PT2H``, ``P1DT12H``.

    Raises ``ValueError`` saying what is accepted.
    """
    s = text.strip()
    if s.upper().startswith("P"):
        m = _ISO.match(s.upper())
        if m and s.upper() not in ("P", "PT") and not s.upper().endswith("T"):
            parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
            total = (
                parts["w"] * 604_800_000
                + parts["d"] * 86_400_000
                + parts["h"] * 3_600_000
                + parts["m"] * 60_000
                + parts["s"] * 1000
            )
            return int(total)
    else:
        pos = 0
        total = 0.0
        for m in _SHORT.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS_MS[m.group(2)]
            pos = m.end()
        if pos == len(s) and pos > 0:
            return int(total)
    raise ValueError(
        f"{text!r} is not a duration — use e.g. '500ms', '30s', '5m', '1h30m', '7d', '2w' "
        "or ISO 8601 like 'PT30S'"
    )


def format_duration(ms: int) -> str:
    """Short human form: ``90061000 -> '1d1h1m1s'``; ``0 -> '0s'``."""
    if ms == 0:
        return "0s"
    out = []
    rest = ms
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    if rest:
        out.append(f"{rest}ms")
    return "".join(out)
