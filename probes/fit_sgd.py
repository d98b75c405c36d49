"""The seed's recipe: AdamW minibatches, early stopping on the validation metric, best epoch restored."""
from __future__ import annotations

import copy
import time

import torch

from rsearch.probes.data import ProbeData, column_stats
from rsearch.probes.fit_config import FitConfig
from rsearch.probes.metrics import evaluate
from rsearch.probes.models import Probe, make_probe
from rsearch.probes.objectives import PRIMARY_METRIC, batch_loss, num_units


def init_probe(kind: str, train: ProbeData, cfg: FitConfig) -> Probe:
    """A fresh probe on train's device, seeded, with train's standardization."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = make_probe(kind, train.d_model, hidden=cfg.hidden)
    probe = probe.to(train.x.device)
    probe.set_standardization(*column_stats(train.x))
    return probe


def fit_sgd(kind: str, train: ProbeData, val: ProbeData | None, cfg: FitConfig) -> tuple[Probe, dict]:
    """Minibatch AdamW on the objective's loss.

    Args:
        kind: "linear" or "mlp".
        train: training data (batches are drawn from pairs for pairwise, rows otherwise).
        val: validation data for early stopping; None runs all max_epochs and keeps the last.
        cfg: lr, batch_size, weight_decay, max_epochs, patience, seed, objective.

    Returns:
        (probe, history) with per-epoch `train_loss`, `val_metric` and cumulative `epoch_seconds`
        (training time only, evaluation excluded), plus `best_epoch`, `epochs`, `seconds`.
    """
    start = time.perf_counter()
    probe = init_probe(kind, train, cfg)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = num_units(train, cfg.objective)
    metric = PRIMARY_METRIC[cfg.objective]
    history: dict = {"fitter": "sgd", "metric": metric, "train_loss": [], "val_metric": [],
                     "epoch_seconds": [], "best_epoch": None}
    best, best_state, stale, train_seconds = float("-inf"), None, 0, 0.0
    for epoch in range(cfg.max_epochs):
        # one pass over the units in a seeded order
        t0 = time.perf_counter()
        probe.train()
        order = torch.randperm(n, generator=gen).to(train.x.device)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            loss = batch_loss(probe, train, order[i:i + cfg.batch_size], cfg.objective)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * min(cfg.batch_size, n - i)
        train_seconds += time.perf_counter() - t0
        history["train_loss"].append(total / n)
        history["epoch_seconds"].append(train_seconds)
        if val is None:
            continue
        # keep the best epoch's weights; stop after `patience` epochs without improvement
        probe.eval()
        value = evaluate(probe, val, cfg.objective).get(metric, float("-inf"))
        history["val_metric"].append(value)
        if value > best:
            best, best_state, stale = value, copy.deepcopy(probe.state_dict()), 0
            history["best_epoch"] = epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        probe.load_state_dict(best_state)
    history["epochs"] = len(history["train_loss"])
    history["seconds"] = time.perf_counter() - start
    return probe, history
