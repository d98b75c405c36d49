"""Controls every probe metric is reported next to: a length-only predictor and a shuffled-label probe."""
from __future__ import annotations

import torch

from rsearch.probes.data import ProbeData
from rsearch.probes.fitters import FitConfig, fit_probe
from rsearch.probes.metrics import evaluate, metrics_from_scores
from rsearch.probes.models import Probe
from rsearch.errors import RsearchError


def length_features(data: ProbeData) -> ProbeData:
    """The same data with x replaced by the completion length, a [n, 1] feature."""
    if data.lengths is None:
        raise RsearchError("the length control needs completion lengths, and the data has none")
    return ProbeData(x=data.lengths.detach().float().cpu()[:, None], y=data.y.cpu(),
                     pairs=None if data.pairs is None else data.pairs.cpu(), lengths=data.lengths.cpu())


def shuffled_labels(data: ProbeData, seed: int) -> ProbeData:
    """y permuted, and each pair's order flipped with probability 1/2, both seeded."""
    gen = torch.Generator().manual_seed(seed)
    y = data.y[torch.randperm(data.n, generator=gen).to(data.y.device)]
    pairs = data.pairs
    if pairs is not None:
        flip = (torch.rand(pairs.shape[0], generator=gen) < 0.5).to(pairs.device)   # [m]
        pairs = torch.where(flip[:, None], pairs.flip(1), pairs)
    return data.with_labels(y, pairs)


def length_control(train: ProbeData, val: ProbeData | None, test: ProbeData, cfg: FitConfig) -> dict[str, float]:
    """Held-out metrics of a linear probe on completion length alone, fitted with the same objective.

    The fit learns the sign (does the rater prefer longer completions?) and, for regression, the scale.
    """
    length_cfg = cfg.replace(fitter="fast")
    probe, _ = fit_probe("linear", length_features(train),
                         None if val is None else length_features(val), length_cfg)
    scores = probe(length_features(test).x).detach()                             # [n]
    return metrics_from_scores(scores, test, cfg.objective)


def with_controls(kind: str, train: ProbeData, val: ProbeData | None, test: ProbeData, cfg: FitConfig,
                  probe: Probe | None = None) -> dict[str, dict[str, float]]:
    """The probe's held-out metrics next to its two controls.

    Args:
        kind: "linear" or "mlp".
        train, val, test: splits; every one needs `lengths` for the length control.
        cfg: the fit configuration, used for the probe (unless given) and both controls.
        probe: an already trained probe to evaluate instead of fitting one.

    Returns:
        {"probe": metrics, "length": metrics of a length-only predictor,
         "shuffled": metrics of the same probe kind and recipe trained on shuffled train/val labels},
        all on the (unshuffled) test split.
    """
    if probe is None:
        probe, _ = fit_probe(kind, train, val, cfg)
    shuffled_probe, _ = fit_probe(kind, shuffled_labels(train, cfg.seed + 1),
                                  None if val is None else shuffled_labels(val, cfg.seed + 2), cfg)
    return {
        "probe": evaluate(probe, test, cfg.objective),
        "length": length_control(train, val, test, cfg),
        "shuffled": evaluate(shuffled_probe, test, cfg.objective),
    }
