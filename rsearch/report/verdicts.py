"""A verdict from a confidence interval: where [lo, hi] lies against a reference."""
from __future__ import annotations

from rsearch.analysis.stats import verdict as ci_verdict


def verdict(lo, hi, ref: float = 0.0) -> str:
    """above / below / inconclusive: where the CI [lo, hi] lies against `ref`."""
    if lo is None or hi is None:
        return "inconclusive"
    return ci_verdict(lo - ref, hi - ref, positive="above", negative="below", neither="inconclusive")
