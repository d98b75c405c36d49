"""Choosing the best sweep cell by cross-validation over prompts: folds keep a prompt whole, a cell that carries the
signal beats a noise cell in nearly every prompt resample, two copies of one cell split the wins, and a sweep
records each cell's CV score and share of wins (summing to 1 over the cells it chose among)."""
from __future__ import annotations

import json

import numpy as np
import torch

from rsearch.jobs.train_probe import TrainProbeConfig, train_probes
from rsearch.probes import ProbeData
from rsearch.probes.cross_validation import cv_summary, out_of_fold, prompt_folds, selection_frequency
from rsearch.probes.fit_config import FitConfig


def pair_data(signal: float, n_pairs: int = 120, d: int = 8, seed: int = 0) -> tuple[ProbeData, list[str]]:
    """Pairs whose chosen row differs from its rejected one by `signal` along the first axis (plus noise); two
    pairs per prompt."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n_pairs, d, generator=gen)
    x[0::2, 0] += signal
    y = torch.tensor([1.0, 0.0] * n_pairs)
    data = ProbeData(x=x, y=y, pairs=torch.arange(2 * n_pairs).view(-1, 2), lengths=torch.ones(2 * n_pairs))
    return data, [f"p{i // 2}" for i in range(n_pairs)]


def test_folds_keep_each_prompt_whole_and_use_every_fold():
    groups = [f"p{i % 17}" for i in range(100)]
    folds = prompt_folds(groups, 5, seed=3)
    by_group = {}
    for g, f in zip(groups, folds):
        by_group.setdefault(g, set()).add(int(f))
    assert all(len(v) == 1 for v in by_group.values()) and set(folds.tolist()) == set(range(5))


def test_a_signal_cell_wins_against_noise_and_copies_split_the_wins():
    cfg = FitConfig(objective="pairwise", fitter="fast")
    good, groups = pair_data(1.5)
    noise, _ = pair_data(0.0, seed=1)
    oof_good = out_of_fold("linear", good, groups, cfg, 5, seed=0)
    oof_noise = out_of_fold("linear", noise, groups, cfg, 5, seed=0)
    assert not np.isnan(oof_good).any()
    s = cv_summary(oof_good, None, groups, 5, seed=0)
    assert s["cv"] > 0.75 and s["cv_lo"] < s["cv"] < s["cv_hi"] and s["n"] == 120
    assert abs(cv_summary(oof_noise, None, groups, 5, seed=0)["cv"] - 0.5) < 0.15
    shares = selection_frequency({"good": oof_good, "noise": oof_noise}, None, groups, seed=0, n_boot=200)
    assert shares["good"] > 0.95 and abs(sum(shares.values()) - 1) < 1e-9
    twins = selection_frequency({"a": oof_good, "b": oof_good.copy(), "noise": oof_noise}, None, groups, seed=0,
                                n_boot=200)
    assert twins["noise"] < 0.05 and twins["a"] + twins["b"] > 0.95  # ties go to the first: the choice is by order


def test_a_sweep_records_cv_scores_shares_and_notes(tmp_path):
    from tiny import feedback_records, save_tiny_model, write_jsonl

    save_tiny_model(tmp_path / "model", arch="llama", n_layers=3, d_model=32)
    write_jsonl(tmp_path / "fb.jsonl", feedback_records(200))
    cfg = TrainProbeConfig(model=str(tmp_path / "model"), dataset=str(tmp_path / "fb.jsonl"), sweep=True,
                           positions=("user_end", "completion_mean"), out=str(tmp_path / "out"),
                           store_dir=str(tmp_path / "store"), rater="none")
    result = train_probes(cfg)
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    pair_cells = [r for r in rows if r["position"] == "completion_mean" and not r["embedding"]]
    assert all(r["cv"] is not None and r["cv_lo"] <= r["cv"] <= r["cv_hi"] for r in pair_cells)
    assert abs(sum(r["selected_share"] for r in pair_cells) - 1) < 1e-9
    assert result.best.cv["cv"] == max(r["cv"] for r in pair_cells) and not result.best.embedding
    assert all(r["selected_share"] is None for r in rows if r["embedding"])
    # layer 0 at user_end reads one fixed token (the template's last): a note in place of an undefined r
    (emb_ue,) = [r for r in rows if r["position"] == "user_end" and r["layer"] == 0]
    assert emb_ue["test_r"] is None and emb_ue["note"].startswith("constant input")
    assert all(r["note"] is None for r in rows if r["layer"] > 0)
