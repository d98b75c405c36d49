"""Number formatting: the only way numbers enter the report's text, so every number it states is in report.json."""
from __future__ import annotations

import math
import re
from typing import Any


def fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    return f"{x:.3f}"


def fmt_signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}"


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}"


def ci(lo: Any, hi: Any, signed: bool = False) -> str:
    f = fmt_signed if signed else fmt
    return f"[{f(lo)}, {f(hi)}]"


def code(text: Any) -> str:
    """Text from the data (a prompt, a path, a rater's name) as a Markdown code span that no backtick inside it can
    end: fenced by one backtick more than its longest run (CommonMark), padded by a space when it holds any."""
    s = str(text)
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    pad = " " if run else ""
    return f"{'`' * (run + 1)}{pad}{s}{pad}{'`' * (run + 1)}"
