"""The source probe: a classifier on one model's activations that tells whether the pre- or the post-RL model
wrote a completion.

Completions of both models for the same prompts are read by one model (the reward probe's host), at every
requested layer × position. Prompts are split into train / validation / test (seeded), so no prompt is in two
splits; a linear probe is fitted with the classification objective (post = 1) on train, the best layer ×
position is chosen on validation, and every cell is reported on test: accuracy (threshold 0 on the logit)
with a 95% CI that resamples held-out prompts (completions of one prompt are not independent), AUROC, and a
length-only classifier beside it (if the models differ mainly in how long they write, length alone tells them
apart).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import torch

from rsearch.activations import extract
from rsearch.analysis.stats import bootstrap_ci
from rsearch.chat import Encoded
from rsearch.hooks import HookPoint, parse_hook
from rsearch.probes import FitConfig, ProbeData, auroc, fit_probe, predict
from rsearch.probes.controls import length_features


def split_groups(groups: Sequence[Any], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Row indices of each part of a seeded split over the distinct groups (prompts)."""
    keys = sorted(set(groups), key=str)
    random.Random(seed).shuffle(keys)
    bounds, acc = [], 0.0
    for f in fractions[:-1]:
        acc += f
        bounds.append(int(round(acc * len(keys))))
    part = {g: sum(i >= b for b in bounds) for i, g in enumerate(keys)}
    out: list[list[int]] = [[] for _ in fractions]
    for i, g in enumerate(groups):
        out[part[g]].append(i)
    return out


def _accuracy(scores: torch.Tensor, y: torch.Tensor, groups: Sequence[Any], seed: int = 0) -> dict[str, float]:
    """Accuracy (threshold 0) with a prompt-level (cluster) bootstrap 95% CI, and AUROC.

    Args:
        scores, y: `[n]` logits and labels; groups: `[n]` prompt of each row.
    """
    correct = ((scores > 0).float() == y).double().numpy()                 # [n]
    n = int(y.numel())
    lo, hi = bootstrap_ci(correct, clusters=list(groups), n_boot=2000, seed=seed)
    out = {"accuracy": float(correct.mean()) if n else float("nan"), "accuracy_lo": lo, "accuracy_hi": hi, "n": n,
           "n_prompts": len(set(groups))}
    a = auroc(scores, y)
    if a == a:
        out["auroc"] = a
    return out


def fit_source_probes(acts: dict[tuple[str, str], torch.Tensor], labels: Sequence[int], groups: Sequence[Any],
                      lengths: Sequence[float], *, seed: int = 0, l2: float = 1e-2,
                      fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> dict[str, Any]:
    """Fits and evaluates one source probe per (hook, position).

    Args:
        acts: {(hook name, position spec): `[n_rows, d_model]`} activations of every completion.
        labels: `[n_rows]` 1 if the post-RL model wrote the completion, 0 for the pre-RL model.
        groups: `[n_rows]` prompt of each completion (the split is by prompt).
        lengths: `[n_rows]` completion lengths in tokens (for the length control).
        l2: the fast fitter's penalty on standardized features.

    Returns:
        {"rows": [per cell: hook, layer, position, val, test], "best": the row chosen on validation,
         "length_control": test metrics of a length-only classifier, "n": split sizes, "split": how}.
    """
    y = torch.tensor([float(v) for v in labels])
    lens = torch.tensor([float(v) for v in lengths])
    parts = split_groups(groups, fractions, seed)
    idx = {name: torch.tensor(p, dtype=torch.long) for name, p in zip(("train", "val", "test"), parts)}
    part_groups = {name: [groups[i] for i in p] for name, p in zip(("train", "val", "test"), parts)}
    cfg = FitConfig(objective="classification", fitter="fast", l2=l2, seed=seed)
    rows = []
    for (hook, position), x in acts.items():
        data = {k: ProbeData(x=x[v], y=y[v], lengths=lens[v]) for k, v in idx.items()}
        probe, _ = fit_probe("linear", data["train"], data["val"], cfg)
        rows.append({"hook": hook, "layer": parse_hook(hook).layer, "position": position,
                     "val": _accuracy(predict(probe, data["val"].x), data["val"].y, part_groups["val"], seed),
                     "test": _accuracy(predict(probe, data["test"].x), data["test"].y, part_groups["test"], seed)})
    full = ProbeData(x=torch.zeros(len(y), 1), y=y, lengths=lens)
    length_data = {k: length_features(full.subset(v)) for k, v in idx.items()}
    length_probe, _ = fit_probe("linear", length_data["train"], length_data["val"], cfg)
    length_control = _accuracy(predict(length_probe, length_data["test"].x), length_data["test"].y,
                               part_groups["test"], seed)
    best = max(rows, key=lambda r: (r["val"]["accuracy"], r["val"].get("auroc", 0.0), -r["layer"]))
    return {"rows": rows, "best": best, "length_control": length_control,
            "n": {k: int(v.numel()) for k, v in idx.items()},
            "n_prompts": {k: len({groups[i] for i in v.tolist()}) for k, v in idx.items()},
            "split": f"by prompt, seeded {seed}, train/val/test {'/'.join(str(f) for f in fractions)}",
            "objective": "classification (post = 1), linear probe, fast fitter, l2 " + f"{l2:g}",
            "ci": "percentile bootstrap 95% over held-out prompts (2000 resamples of whole prompts)"}


def source_probe(model, tokenizer, rows: Sequence[Encoded], labels: Sequence[int], groups: Sequence[Any],
                 lengths: Sequence[float], *, layers: Sequence[int], positions: Sequence[str] = ("completion_mean", "-1"),
                 hook_kind: str = "resid_pre", seed: int = 0, batch_size: int = 16, progress: bool = False,
                 acts: dict | None = None) -> dict[str, Any]:
    """Extracts activations of `rows` from `model` (unless `acts` is given) and runs `fit_source_probes`."""
    if acts is None:
        hooks = [HookPoint(L, hook_kind).name for L in layers]
        acts = extract(model, rows, hooks, list(positions), pad_id=tokenizer.pad_token_id, batch_size=batch_size,
                       progress=progress)
    return fit_source_probes(acts, labels, groups, lengths, seed=seed)
