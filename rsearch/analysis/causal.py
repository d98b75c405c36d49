"""Statistics of the causal experiments: the steering dose–response and the patching effects per layer.

The independent unit is the prompt. Steering: every condition (direction × α) sampled k completions for the same
prompts with the same seeds, so per prompt and condition the k values are averaged first; a curve point is the
mean over prompts with a percentile bootstrap CI over prompts, and a direction's effect is each prompt's
least-squares slope of the metric over α (α = 0, the unsteered run, included) — the random directions' values
averaged per prompt first. A direction moves a metric beyond a null when the bootstrap CI over prompts of the
per-prompt slope difference (direction − null) excludes 0. Patching: each feedback pair is one prompt; a patch's
effect is the mean change of the DPO margin over pairs, beside the null's, with the CI of their paired difference.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from rsearch.analysis.stats import bootstrap_ci

NULLS = ("random", "shuffled")


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    values = values[~np.isnan(values)]
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": float(values.mean()) if values.size else float("nan"), "lo": lo, "hi": hi, "n": int(values.size)}


def per_prompt(table: Sequence[dict[str, Any]], metric: str, n_prompts: int) -> dict[tuple[str, float], np.ndarray]:
    """(direction kind, α) → `[n_prompts]` the metric's mean per prompt (NaN where a prompt has no value).
    The kind "none" (α = 0, unsteered) is also filed under every other kind at α = 0."""
    acc: dict[tuple[str, float], list[list[float]]] = defaultdict(lambda: [[] for _ in range(n_prompts)])
    for r in table:
        v = r.get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc[(r["direction"], float(r["alpha"]))][r["prompt_index"]].append(float(v))
    out = {key: np.asarray([np.mean(x) if x else np.nan for x in lists]) for key, lists in acc.items()}
    base = out.get(("none", 0.0))
    if base is not None:
        for kind in {k for k, _ in out} - {"none"}:
            out[(kind, 0.0)] = base
    return out


def slopes(means: dict[tuple[str, float], np.ndarray], kind: str) -> np.ndarray:
    """`[n_prompts]` least-squares slope of the per-prompt means over α for one kind (NaN where < 2 α values)."""
    alphas = sorted(a for k, a in means if k == kind)
    y = np.stack([means[(kind, a)] for a in alphas])          # [n_alpha, n_prompts]
    x = np.asarray(alphas)[:, None].repeat(y.shape[1], 1)     # [n_alpha, n_prompts]
    ok = ~np.isnan(y)
    n = ok.sum(0)
    xm = np.where(ok, x, 0).sum(0) / np.maximum(n, 1)
    ym = np.where(ok, y, 0).sum(0) / np.maximum(n, 1)
    sxy = np.where(ok, (x - xm) * (y - ym), 0).sum(0)
    sxx = np.where(ok, (x - xm) ** 2, 0).sum(0)
    return np.where((n >= 2) & (sxx > 0), sxy / np.where(sxx > 0, sxx, 1), np.nan)


def dose_response(table: Sequence[dict[str, Any]], metrics: Sequence[str], *, n_prompts: int, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Curves (mean and CI per kind and α) and slopes (per kind, and the probe's against each null) per metric.

    Args:
        table: one row per completion: direction ("probe", "random", "shuffled", "none"), alpha, prompt_index
            and the metrics.
    """
    out: dict[str, Any] = {}
    for metric in metrics:
        means = per_prompt(table, metric, n_prompts)
        if not means:
            continue
        kinds = sorted({k for k, _ in means if k != "none"})
        curves = {kind: [{"alpha": a, **_mean_ci(means[(kind, a)], n_boot, seed)}
                         for a in sorted(a for k, a in means if k == kind)] for kind in kinds}
        s = {kind: slopes(means, kind) for kind in kinds}
        summary = {kind: _mean_ci(s[kind], n_boot, seed) for kind in kinds}
        if "probe" in s:
            for null in NULLS:
                if null in s:
                    summary[f"probe_minus_{null}"] = _mean_ci(s["probe"] - s[null], n_boot, seed)
        out[metric] = {"curves": curves, "slopes": summary}
    return out


def beyond(ci: dict[str, float] | None) -> str:
    """above / below / inconclusive: where a CI lies against 0."""
    if not ci or ci["lo"] != ci["lo"] or ci["hi"] != ci["hi"]:
        return "inconclusive"
    return "above" if ci["lo"] > 0 else "below" if ci["hi"] < 0 else "inconclusive"


def patching_summary(got: dict[str, Any], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per direction × layer × position: mean margin change [CI], the null's, their paired difference [CI] and
    the change as a fraction of the mean margin."""
    margin = np.asarray(got["margin"], dtype=np.float64)
    base = _mean_ci(margin, n_boot, seed)
    rows = []
    for e in got["effects"]:
        d, d0 = np.asarray(e["delta"], dtype=np.float64), np.asarray(e["delta_null"], dtype=np.float64)
        row = {k: e[k] for k in ("direction", "layer", "hook", "position")}
        row.update({"delta": _mean_ci(d, n_boot, seed), "delta_null": _mean_ci(d0, n_boot, seed),
                    "delta_minus_null": _mean_ci(d - d0, n_boot, seed),
                    "fraction_of_margin": float(d.mean() / margin.mean()) if margin.mean() != 0 else float("nan")})
        row["verdict"] = beyond(row["delta_minus_null"])
        rows.append(row)
    return {"n_pairs": int(margin.size), "margin": base, "rows": rows}
