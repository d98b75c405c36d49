"""Which cell of a sweep is best, decided by k-fold cross-validation over prompts, with the choice's uncertainty.

A validation split of a few dozen pairs picks the best of many cells almost at random (on SmolLM2 a cell with val
1.0 scored 0.72 on test while another with val 0.88 scored 0.95). Here train + validation are pooled and cut into
k folds of whole prompts (a prompt's pairs never straddle folds). For each fold a probe is fitted on the others —
the last of which is its validation split, for the fitter's own choices (the ridge penalty) — and scored on the fold
held out. Each unit (a pair; at `user_end`, a prompt) thus gets an out-of-fold score from a probe that never saw
it, and a cell's CV score is computed over all of them: pairwise accuracy, or Pearson r for regression.

`selection_frequency` resamples prompts (the independent unit) with replacement and recomputes every cell's CV
score on the resample: the share of resamples each cell wins is how sure the choice is.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rsearch.analysis.stats import bootstrap, percentile_ci
from rsearch.probes.data import ProbeData
from rsearch.probes.fit_config import FitConfig
from rsearch.probes.fitters import fit_probe
from rsearch.probes.metrics import predict


def prompt_folds(groups: Sequence[Any], k: int, seed: int) -> np.ndarray:
    """`[n_units]` fold index of each unit: whole groups (prompts) dealt into k folds in a seeded order."""
    names = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[j]: i % k for i, j in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups])


def _units(data: ProbeData, pairwise: bool) -> int:
    return data.n_pairs if pairwise else data.n


def _take(data: ProbeData, units: np.ndarray, pairwise: bool) -> ProbeData:
    """The data of the given units (pairs keep both their rows)."""
    rows = data.pairs[torch.as_tensor(units)].flatten() if pairwise else torch.as_tensor(units)
    return data.subset(rows)


def out_of_fold(kind: str, data: ProbeData, groups: Sequence[Any], cfg: FitConfig, k: int, seed: int) -> np.ndarray:
    """Per unit, the out-of-fold value: for pairwise data 1/0/½ (chosen scored above / below / equal to rejected),
    else the probe's prediction of the row. Fitted k times with `cfg` (see the module docstring)."""
    pairwise = cfg.objective != "regression"
    n = _units(data, pairwise)
    if len(groups) != n:
        raise ValueError(f"groups: {len(groups)} labels for {n} units")
    folds = prompt_folds(groups, k, seed)
    out = np.full(n, np.nan)
    for f in range(k):
        held = np.flatnonzero(folds == f)
        inner_val = np.flatnonzero(folds == (f + 1) % k)
        train = np.flatnonzero((folds != f) & (folds != (f + 1) % k))
        if not len(held) or not len(train) or not len(inner_val):
            continue
        probe, _ = fit_probe(kind, _take(data, train, pairwise), _take(data, inner_val, pairwise), cfg)
        part = _take(data, held, pairwise)
        scores = predict(probe, part.x).double().numpy()
        if pairwise:
            diff = scores[part.pairs[:, 0].numpy()] - scores[part.pairs[:, 1].numpy()]
            out[held] = (diff > 0) + 0.5 * (diff == 0)
        else:
            out[held] = scores
    return out


def cv_metric(oof: np.ndarray, target: np.ndarray | None) -> float:
    """The CV score of out-of-fold values: their mean (pairwise: accuracy), or Pearson r with `target`."""
    keep = ~np.isnan(oof)
    if target is None:
        return float(oof[keep].mean()) if keep.any() else float("nan")
    a, b = oof[keep], target[keep]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def cv_summary(oof: np.ndarray, target: np.ndarray | None, groups: Sequence[Any], k: int, seed: int,
               n_boot: int = 500) -> dict[str, Any]:
    """{cv, cv_lo, cv_hi, k, n}: the CV score and its bootstrap 95% interval over prompts."""
    both = np.column_stack([oof, target if target is not None else np.zeros_like(oof)])
    stat = (lambda x: cv_metric(x[:, 0], None)) if target is None else (lambda x: cv_metric(x[:, 0], x[:, 1]))
    boots = bootstrap(both, n_boot=n_boot, rng=np.random.default_rng(seed), stat=stat, clusters=list(groups))
    lo, hi = percentile_ci(boots)
    return {"cv": cv_metric(oof, target), "cv_lo": lo, "cv_hi": hi, "k": k, "n": int((~np.isnan(oof)).sum())}


def selection_frequency(oofs: dict[str, np.ndarray], target: np.ndarray | None, groups: Sequence[Any], seed: int,
                        n_boot: int = 500) -> dict[str, float]:
    """{cell: share of prompt resamples in which it has the highest CV score}; every cell's `oof` is over the same
    units (in the same order) as `groups` and `target`."""
    names = list(oofs)
    if not names:
        return {}
    keys = {g: j for j, g in enumerate(dict.fromkeys(groups))}
    member = np.asarray([keys[g] for g in groups])
    rows = [np.flatnonzero(member == j) for j in range(len(keys))]
    rng = np.random.default_rng(seed)
    wins = np.zeros(len(names))
    for _ in range(n_boot):
        idx = np.concatenate([rows[j] for j in rng.integers(0, len(rows), len(rows))])
        t = None if target is None else target[idx]
        scores = np.asarray([cv_metric(oofs[c][idx], t) for c in names])
        scores = np.where(np.isnan(scores), -np.inf, scores)
        wins[int(np.argmax(scores))] += 1
    return {c: float(w / n_boot) for c, w in zip(names, wins)}
