"""Paired statistics of the pre/post comparison, computed from per-completion numbers.

The unit of pairing is the prompt: each model wrote k completions for the same prompt, each completion has a
value (probe score, DPO implicit reward, length, true reward); per prompt and model the k values are
averaged, and the paired difference post − pre is taken across prompts. Its 95% CI is a percentile
bootstrap over prompts (seeded); its p-value is scipy's two-sided Wilcoxon signed-rank test on the per-prompt
differences (zero differences dropped, the "wilcox" method; exact for at most 50 untied differences, else the
tie-corrected normal approximation). A paired t-test's p-value is reported beside it.

Every interval over numbers that pool several completions of one prompt resamples whole prompts
(`bootstrap_ci(..., clusters=prompt of each row)`): the prompt, not the completion, is the independent unit.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

METRICS_TEST = ("Wilcoxon signed-rank (two-sided, scipy.stats.wilcoxon, zero differences dropped; exact for ≤ 50 "
                "untied differences, else the normal approximation)")
Z_95 = 1.959963984540054


def bootstrap(values: Sequence[float] | np.ndarray, *, n_boot: int = 2000, rng: np.random.Generator,
              stat=np.mean, clusters: Sequence[Any] | None = None) -> np.ndarray:
    """`[n_boot]` values of `stat` on resamples of the rows of `values`, drawn with replacement from `rng`: the
    one resampler behind every interval here.

    Args:
        values: `[n]` (n ≥ 1) or `[n, k]` rows; `stat` maps a resample of rows to one number.
        clusters: `[n]` the independent unit of each row (e.g. its prompt): whole clusters are resampled, so
            rows of one cluster never count as independent. None: every row is its own cluster.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if clusters is None:
        idx = rng.integers(0, n, size=(n_boot, n))  # [n_boot, n]
        boots = x[idx].mean(axis=1) if stat is np.mean else np.asarray([stat(x[i]) for i in idx])
    else:
        if len(clusters) != n:
            raise ValueError(f"clusters: {len(clusters)} labels for {n} rows")
        keys = {k: j for j, k in enumerate(dict.fromkeys(clusters))}
        member = np.asarray([keys[c] for c in clusters])                     # [n] cluster index of each row
        picks = rng.integers(0, len(keys), size=(n_boot, len(keys)))         # [n_boot, n_clusters]
        if stat is np.mean and x.ndim == 1:  # the mean of a resample: summed cluster totals over summed sizes
            sums, sizes = np.bincount(member, weights=x), np.bincount(member).astype(np.float64)
            boots = sums[picks].sum(1) / sizes[picks].sum(1)
        else:
            rows = [np.flatnonzero(member == j) for j in range(len(keys))]
            boots = np.asarray([stat(x[np.concatenate([rows[j] for j in p])]) for p in picks])
    return boots


def percentile_ci(boots: Sequence[float] | np.ndarray, q: Sequence[float] = (0.025, 0.975)) -> tuple[float, float]:
    """The `q` quantiles of bootstrap values, NaN ones dropped; NaNs where none is left."""
    boots = np.asarray(boots, dtype=np.float64)
    boots = boots[~np.isnan(boots)]
    if boots.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(boots, list(q))
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 stat=np.mean, clusters: Sequence[Any] | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` over the rows of `values`, resampled with replacement (seeded); see
    `bootstrap` for `values`, `stat` and `clusters`. Resamples where `stat` is NaN are dropped."""
    if len(values) == 0:
        return float("nan"), float("nan")
    boots = bootstrap(values, n_boot=n_boot, rng=np.random.default_rng(seed), stat=stat, clusters=clusters)
    a = (1.0 - level) / 2.0
    return percentile_ci(boots, (a, 1.0 - a))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else float("nan")


def correlation(a: Sequence[float], b: Sequence[float], *, groups: Sequence[Any] | None = None,
                n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Pearson and Spearman r of two per-completion columns, with a bootstrap CI of Pearson r resampling whole
    `groups` (prompts) when given."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = _pearson(x, y)
    rho = float(spearmanr(x, y).statistic) if len(x) > 2 and np.std(x) > 0 and np.std(y) > 0 else float("nan")
    lo, hi = bootstrap_ci(np.column_stack([x, y]), n_boot=n_boot, seed=seed, clusters=groups,
                          stat=lambda rows: _pearson(rows[:, 0], rows[:, 1]))
    return {"pearson": r, "pearson_lo": lo, "pearson_hi": hi, "spearman": rho, "n": int(len(x))}


def wilcoxon_method(diffs: Sequence[float]) -> str:
    """"exact" for at most 50 non-zero differences without ties in |d|, else "approx" (the normal approximation,
    tie-corrected); stated so that scipy's version-dependent "auto" (which may run a slow permutation test) is
    never used."""
    d = np.abs(np.asarray(diffs, dtype=np.float64))
    d = d[d != 0]
    return "exact" if d.size <= 50 and np.unique(d).size == d.size else "approx"


def paired_test(diffs: Sequence[float]) -> tuple[float, float]:
    """(Wilcoxon signed-rank p, paired t-test p) of per-prompt differences; 1.0 where all differences are 0."""
    from scipy.stats import ttest_1samp, wilcoxon

    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2 or not np.any(d != 0):
        return 1.0, 1.0
    p_w = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided", method=wilcoxon_method(d)).pvalue)
    p_t = float(ttest_1samp(d, 0.0).pvalue) if np.std(d) > 0 else 0.0
    return p_w, (1.0 if math.isnan(p_t) else p_t)


def per_prompt_means(rows: Iterable[dict[str, Any]], metric: str, *, key: str = "prompt_index",
                     model_key: str = "model", models: tuple[str, str] = ("pre", "post")
                     ) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Per prompt, the mean of `metric` over each model's completions; prompts lacking either model are dropped.

    Returns:
        (prompt keys in sorted order, `[n_prompts]` pre means, `[n_prompts]` post means).
    """
    acc: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = r.get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc[r[key]][r[model_key]].append(float(v))
    keys = sorted(k for k, by in acc.items() if by.get(models[0]) and by.get(models[1]))
    pre = np.asarray([np.mean(acc[k][models[0]]) for k in keys], dtype=np.float64)
    post = np.asarray([np.mean(acc[k][models[1]]) for k in keys], dtype=np.float64)
    return keys, pre, post


def paired_summary(pre: Sequence[float], post: Sequence[float], *, n_boot: int = 2000, seed: int = 0
                   ) -> dict[str, float]:
    """Means of each side, the mean paired difference post − pre with its bootstrap 95% CI and p-values.

    Args:
        pre, post: `[n_prompts]` per-prompt means, aligned by prompt.
    """
    pre, post = np.asarray(pre, dtype=np.float64), np.asarray(post, dtype=np.float64)
    d = post - pre
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    p_w, p_t = paired_test(d)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else float("nan")
    return {
        "n_prompts": int(d.size),
        "mean_pre": float(pre.mean()) if d.size else float("nan"),
        "mean_post": float(post.mean()) if d.size else float("nan"),
        "diff": float(d.mean()) if d.size else float("nan"),
        "ci_lo": lo, "ci_hi": hi,
        "p_value": p_w, "p_value_ttest": p_t,
        "effect_size": float(d.mean() / sd) if sd and sd > 0 else float("nan"),  # paired Cohen's d_z
        "frac_post_higher": float(np.mean(d > 0)) if d.size else float("nan"),
    }


def verdict(lo: float, hi: float, *, positive: str = "yes", negative: str = "no, the opposite",
            neither: str = "inconclusive") -> str:
    """A word for a CI: `positive` if it lies above 0, `negative` below, else `neither`."""
    if lo != lo or hi != hi:
        return neither
    if lo > 0:
        return positive
    if hi < 0:
        return negative
    return neither


def two_sample_summary(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0
                       ) -> dict[str, float]:
    """mean(a) − mean(b) for two independent samples: a percentile bootstrap 95% CI (each side resampled on
    its own, seeded) and the two-sided Mann–Whitney U p-value (scipy.stats.mannwhitneyu)."""
    from scipy.stats import mannwhitneyu

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return {"n_a": int(x.size), "n_b": int(y.size), "mean_a": float("nan"), "mean_b": float("nan"),
                "diff": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "p_value": float("nan")}
    rng = np.random.default_rng(seed)  # each side resampled on its own, a then b, from one stream
    boots = bootstrap(x, n_boot=n_boot, rng=rng) - bootstrap(y, n_boot=n_boot, rng=rng)
    lo, hi = np.quantile(boots, [0.025, 0.975])  # NaN kept: a NaN in either sample makes the interval NaN
    same = np.all(x == x[0]) and np.all(y == x[0])
    p = 1.0 if same else float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return {"n_a": int(x.size), "n_b": int(y.size), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "diff": float(x.mean() - y.mean()), "ci_lo": float(lo), "ci_hi": float(hi), "p_value": p}


def fisher_ci(r: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% CI of a Pearson r from n pairs (Fisher z transform)."""
    if r != r or n <= 3:
        return float("nan"), float("nan")
    r = min(max(r, -0.999999), 0.999999)
    c, h = math.atanh(r), z / math.sqrt(n - 3)
    return math.tanh(c - h), math.tanh(c + h)
