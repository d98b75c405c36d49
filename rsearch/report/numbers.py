"""Number formatting: the only way numbers enter the report's text, so every number it states is in report.json."""
from __future__ import annotations

import math
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
