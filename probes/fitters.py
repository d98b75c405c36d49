"""fit_probe: one entry point over the SGD recipe (fit_sgd) and the fast fitters (fit_fast); FitConfig (fit_config.py).

fitter="sgd" is the seed's recipe: AdamW (lr 1e-4, weight decay 1e-4), batch 8, seeded shuffling,
early stopping on the validation metric with patience, best epoch restored.
fitter="fast" is closed-form ridge (regression) or Newton/IRLS or L-BFGS (pairwise, classification) for
the linear probe, and full-batch L-BFGS for the MLP probe, with l2 picked on validation from a small grid.
"""
from __future__ import annotations

from rsearch.errors import RsearchError
from rsearch.probes.data import ProbeData
from rsearch.probes.fit_config import FAST_METHODS, FITTERS, FitConfig
from rsearch.probes.fit_fast import fit_fast
from rsearch.probes.fit_sgd import fit_sgd
from rsearch.probes.models import KINDS, Probe
from rsearch.probes.objectives import check_objective

__all__ = ["FAST_METHODS", "FITTERS", "FitConfig", "fit_probe"]

def fit_probe(kind: str, train: ProbeData, val: ProbeData | None, cfg: FitConfig) -> tuple[Probe, dict]:
    """Fits a probe of `kind` on train, using val (if given) for early stopping or l2 selection.

    Args:
        kind: "linear" or "mlp".
        train: training data; activations may be float32, bfloat16 or float16, on any device.
        val: validation data, or None (SGD then runs max_epochs and keeps the last epoch).
        cfg: objective, fitter and their hyperparameters.

    Returns:
        (probe in eval mode on train.x's device, history) where history holds at least `fitter`,
        `epochs` (epochs or iterations), `val_metric` (list, per epoch for SGD), `metric` (its name)
        and `seconds`.
    """
    if kind not in KINDS:
        raise RsearchError(f"unknown probe kind {kind!r} (known: {', '.join(KINDS)})")
    check_objective(cfg.objective, train, where="train")
    if val is not None:
        check_objective(cfg.objective, val, where="validation")
        if val.d_model != train.d_model:
            raise RsearchError(f"validation width {val.d_model} differs from train width {train.d_model}")
    train = train.to(train.x.device)
    val = None if val is None else val.to(train.x.device)
    fit = fit_sgd if cfg.fitter == "sgd" else fit_fast
    probe, history = fit(kind, train, val, cfg)
    return probe.eval(), history
