"""The target of the prompt-only (`user_end`) probe: the expected reward of the policy's answer to a prompt.

With a rater, it is the mean true reward of k answers sampled from the model the probe reads (its own
distribution, `rsearch.lm.sample_completions`); on feedback data without one, the mean of the prompt's ratings
(every rating of every pair of that prompt). Either is a noisy estimate of the expectation; its reliability is
measured by split-half: each prompt's values are split at random into two halves, the halves' means correlated
across prompts and stepped up with Spearman–Brown (2r / (1 + r)). No predictor can correlate with the target
beyond √reliability (the ceiling).

Beside the probe's r with the target: a prompt-text baseline (ridge on unigram + bigram counts of the prompt,
fitted with the probes' fitter), the r within task (both sides centred on their task's mean, pooled: what is left
once "which kind of prompt" is known) where tasks are known, and bootstrap intervals over prompts.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

from rsearch.chat import Encoded
from rsearch.lm import sample_completions
from rsearch.analysis.stats import bootstrap, bootstrap_ci, percentile_ci
from rsearch.analysis.text_baseline import TextBaselineConfig, fit_text_baseline


def sampled_rewards(model, tokenizer, prompts: Sequence, rater, k: int, *, seed: int, max_new_tokens: int = 64,
                    batch_size: int = 64, progress: bool = False) -> list[list[float]]:
    """Per prompt (a message list), the reward (`rater.rate`, see `rsearch.raters`) of each of k answers sampled
    from `model`."""
    prompts = [list(p) for p in prompts]
    samples = sample_completions(model, tokenizer, prompts, k, seed=seed, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, progress=progress, desc="sample answers (expected reward)")
    rewards = rater.rate([p for p in prompts for _ in range(k)], [c.text for comps in samples for c in comps])
    return [rewards[i * k:(i + 1) * k] for i in range(len(prompts))]


def prompt_ratings(pairs: Sequence) -> dict[str, list[float]]:
    """prompt_id → every rating its pairs hold (chosen's and rejected's), in order."""
    out: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        out[p.prompt_id] += [float(p.score_chosen), float(p.score_rejected)]
    return dict(out)


def split_half_reliability(groups: Sequence[Sequence[float]], seed: int = 0) -> dict[str, Any]:
    """Split-half reliability of per-group means: each group (≥ 2 values) shuffled (seeded) and halved; the halves'
    means correlated across groups (`r_half`) and stepped up by Spearman–Brown (`reliability`); `ceiling` =
    √reliability bounds any predictor's r with the full means."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if g.size < 2:
            continue
        g = g[rng.permutation(g.size)]
        h = g.size // 2
        a.append(g[:h].mean())
        b.append(g[h: 2 * h].mean())
    r = _pearson(np.asarray(a), np.asarray(b)) if len(a) > 2 else float("nan")
    rel = 2 * r / (1 + r) if r == r and r > -1 else float("nan")
    ceiling = math.sqrt(rel) if rel == rel and rel > 0 else (0.0 if rel == rel else float("nan"))
    return _none_for_nan({"n_prompts": len(a), "r_half": r, "reliability": rel, "ceiling": ceiling})


def within_group_r(pred: Sequence[float], target: Sequence[float], groups: Sequence[Any]) -> float | None:
    """Pearson r of pred and target after subtracting each group's mean from both (the pooled within-group r);
    None where either side is constant within groups."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    members: dict[Any, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    for idx in members.values():
        x[idx] -= x[idx].mean()
        y[idx] -= y[idx].mean()
    r = _pearson(x, y)
    return None if r != r else r


def group_mean_prediction(train_groups: Sequence[Any], train_target: Sequence[float], test_groups: Sequence[Any]
                          ) -> np.ndarray:
    """Each test row's prediction: its group's mean training target (the overall mean for an unseen group)."""
    sums: dict[Any, list[float]] = defaultdict(list)
    for g, t in zip(train_groups, train_target):
        sums[g].append(float(t))
    overall = float(np.mean(train_target))
    return np.asarray([np.mean(sums[g]) if g in sums else overall for g in test_groups])


def r_with_ci(pred: Sequence[float], target: Sequence[float], *, n_boot: int = 2000, seed: int = 0
              ) -> dict[str, float]:
    """Pearson r and its percentile bootstrap 95% interval, resampling rows (one row per prompt)."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    lo, hi = bootstrap_ci(np.column_stack([x, y]), n_boot=n_boot, seed=seed,
                          stat=lambda rows: _pearson(rows[:, 0], rows[:, 1]))
    return _none_for_nan({"r": _pearson(x, y), "r_lo": lo, "r_hi": hi})


def r_difference(pred_a: Sequence[float], pred_b: Sequence[float], target: Sequence[float], *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """r(a, target) − r(b, target) with a paired percentile bootstrap 95% interval over prompts."""
    a, b, t = (np.asarray(v, dtype=np.float64) for v in (pred_a, pred_b, target))
    diffs = bootstrap(np.column_stack([a, b, t]), n_boot=n_boot, rng=np.random.default_rng(seed),
                      stat=lambda rows: _pearson(rows[:, 0], rows[:, 2]) - _pearson(rows[:, 1], rows[:, 2]))
    lo, hi = percentile_ci(diffs)
    return _none_for_nan({"diff": _pearson(a, t) - _pearson(b, t), "lo": lo, "hi": hi})


def prompt_text_baseline(train_rows: Sequence[Encoded], train_target: Sequence[float], test_rows: Sequence[Encoded],
                         seed: int) -> np.ndarray:
    """`[n_test]` predictions of a ridge regression on unigram + bigram counts of each prompt's ids (the rendered
    prompt up to the assistant's turn), fitted with the probes' fitter on the training prompts' targets."""
    # the baseline reads the "completion" block of its rows: here the prompt's ids stand in it
    as_rows = lambda rows: [((), r.ids[: r.user_end + 1]) for r in rows]  # noqa: E731
    base = fit_text_baseline(as_rows(train_rows), None, TextBaselineConfig(mode="completion", objective="regression",
                                                                           seed=seed),
                             labels=torch.as_tensor(list(train_target), dtype=torch.float32))
    return base.score(as_rows(test_rows)).double().numpy()


def _none_for_nan(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: an r that cannot be computed (a constant side) is None."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in d.items()}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else float("nan")
