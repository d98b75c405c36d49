"""Held-out metrics: pairwise accuracy with a Wilson 95% interval, Pearson and Spearman r, AUROC.

A metric appears in the result only where it is computable (pairs present, ratings not constant,
labels binary with both classes), so a metrics dict never holds NaN and always serializes as JSON.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from rsearch.probes.data import CHUNK_ROWS, ProbeData
from rsearch.probes.models import Probe
from rsearch.probes.objectives import check_objective, classification_loss, pairwise_loss, regression_loss

Z_95 = 1.959963984540054


@torch.no_grad()
def predict(probe: Probe, x: Tensor) -> Tensor:
    """Scores of every row, in chunks, without autograd.

    Args:
        probe: a probe on x's width.
        x: [n, d_model] activations.

    Returns:
        [n] float32 scores on CPU.
    """
    device = probe.mean.device
    out = [probe(x[i:i + CHUNK_ROWS].to(device)).float().cpu() for i in range(0, x.shape[0], CHUNK_ROWS)]
    return torch.cat(out) if out else torch.zeros(0)


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion; a tie counted as half a success is allowed."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pairwise_accuracy(scores: Tensor, pairs: Tensor) -> tuple[float, float, float]:
    """Fraction of pairs whose chosen row outscores the rejected one (a tie counts half).

    Args:
        scores: [n] scores of every row.
        pairs: [m, 2] row indices (chosen, rejected).

    Returns:
        (accuracy, lo, hi) with a Wilson 95% interval.
    """
    diff = scores[pairs[:, 0]].double() - scores[pairs[:, 1]].double()   # [m]
    m = diff.numel()
    if m == 0:
        return float("nan"), 0.0, 1.0
    wins = float((diff > 0).sum()) + 0.5 * float((diff == 0).sum())
    lo, hi = wilson_interval(wins, m)
    return wins / m, lo, hi


def pearson(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Pearson r in float64; NaN where either side is constant."""
    a, b = _f64(a), _f64(b)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def spearman(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Spearman r: Pearson r of average ranks (ties share their mean rank)."""
    return pearson(rankdata(_f64(a)), rankdata(_f64(b)))


def auroc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic; ties count half. NaN with one class."""
    s, y = _f64(scores), _f64(labels) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def metrics_from_scores(scores: Tensor, data: ProbeData, objective: str | None = None) -> dict[str, float]:
    """Every metric computable from per-row scores of `data`.

    Args:
        scores: [n] scores of data's rows.
        data: the held-out data.
        objective: when given, adds the objective's `loss` on these scores.
    """
    scores = scores.detach().float().cpu()
    y = data.y.detach().float().cpu()
    out: dict[str, float] = {"n": float(data.n), "n_pairs": float(data.n_pairs)}
    if data.n_pairs:
        pairs = data.pairs.long().cpu()
        out["pairwise_acc"], out["pairwise_acc_lo"], out["pairwise_acc_hi"] = pairwise_accuracy(scores, pairs)
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        value = fn(scores, y)
        if not math.isnan(value):
            out[name] = value
    if bool(((y == 0) | (y == 1)).all()):
        value = auroc(scores, y)
        if not math.isnan(value):
            out["auroc"] = value
    if objective == "pairwise" and data.n_pairs:
        out["loss"] = float(pairwise_loss(scores[pairs[:, 0]], scores[pairs[:, 1]]))
    elif objective == "regression":
        out["loss"] = float(regression_loss(scores, y))
    elif objective == "classification" and "auroc" in out:
        out["loss"] = float(classification_loss(scores, y))
    return out


def evaluate(probe: Probe, data: ProbeData, objective: str) -> dict[str, float]:
    """Held-out metrics of a probe.

    Args:
        probe: a trained probe.
        data: held-out data (pairs for pairwise accuracy, ratings or labels in y).
        objective: the objective the probe was trained with (adds its `loss`).

    Returns:
        n, n_pairs, and where computable pairwise_acc with pairwise_acc_lo/hi (Wilson 95%),
        pearson, spearman, auroc, loss.
    """
    check_objective(objective)
    return metrics_from_scores(predict(probe, data.x), data, objective)


def _f64(v: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.detach().double().cpu().numpy().ravel()
    return np.asarray(v, dtype=np.float64).ravel()
