"""Planted-signal power: how strong a reward direction must be before Q1's test would have found it.

A "No" (the best probe does not beat the bag of words) says nothing until one knows the test could have said "Yes".
On the activations the sweep extracted for the chosen cell, `planted_power` adds a known signal along a random unit
direction u shaped like the data,

    x' = x + a · z · u,        z: each row's reward signal, standardized on the training rows,
    u ∝ Dᵀ h,                   h ~ N(0, I), D: [m, d] the training pairs' differences x_chosen − x_rejected, centered,

and measures its strength where a pairwise probe reads it, on the differences: the plant adds a · (z_c − z_r) · u to
each, and `share` is its part of their energy, a² E(z_c − z_r)² / (a² E(z_c − z_r)² + tr Cov(x_c − x_r)). (The
total variance of x would mislead: at a position the answer barely reaches, chosen and rejected rows are nearly equal
and anything planted stands out; a difference all pairs share is an offset, not noise, and is left out.) D is
centered, so u's covariance is the differences' own: an isotropic u would mostly point where the activations never
vary (a real residual stream is far from isotropic) and be found at any strength. For Gaussian differences the best
linear read of the plant has SNR² ≈ share · rank(D) / (1 − share) (the tests' noise, d 16: MDE 0.03); on the demo
organism's activations (d 128) plants were found at shares of 3·10⁻⁴, SNR 0.04 along u — its differences are far
from Gaussian (120 of 392 test pairs are minimal pairs, identical but for the answer, and differ little), and a plant
stands out where they do not differ. So the MDE is measured on the cell's own activations, not read off a formula.
The signal is the row's true
reward where a rater's truth is known, else the label (chosen 1, rejected 0). The probe is refitted with the sweep's
own fitter on the planted training and validation rows and scored on the planted test pairs by Q1's rule: its
accuracy's Wilson interval is above 0.5 and McNemar's test against the strongest text baseline, on the same pairs, has
p < α with the probe ahead. Each share is planted along `n_plants` random directions; the shares are climbed from the
smallest until one is detected in at least `power` of its plants: that share is the minimal detectable effect (MDE).
`snr` is a · rms(z_c − z_r) / std(D · u), the plant against what already lies along u.

What is not redone: the choice of the cell (the plant goes into the chosen cell only, at its own fitter settings), so
the MDE is the power of the test given the cell, not of the whole sweep's selection.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from rsearch.analysis.baselines import PairTruth, accuracies, against_baselines, pair_margins
from rsearch.config import Config, check
from rsearch.probes import FitConfig, ProbeData, fit_probe, predict

SHARES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


@dataclasses.dataclass(frozen=True)
class PlantedPowerConfig(Config):
    """Settings of the planted-signal power analysis.

    Args:
        shares: the shares of activation variance to plant, climbed in order until one is detected.
        n_plants: random directions per share.
        power: the share of plants a strength must be detected in to count as detectable.
        alpha: McNemar's level, as Q1's verdict uses it.
        seed: seeds the directions and the tie-breaking coins.
    """

    shares: tuple[float, ...] = SHARES
    n_plants: int = 5
    power: float = 0.8
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        check(len(self.shares) > 0 and all(0 < s < 1 for s in self.shares),
              f"shares: each must be in (0, 1), got {list(self.shares)}")
        check(list(self.shares) == sorted(self.shares), f"shares: must increase, got {list(self.shares)}")
        check(self.n_plants >= 1, f"n_plants: must be at least 1, got {self.n_plants}")
        check(0 < self.power <= 1, f"power: must be in (0, 1], got {self.power}")
        check(0 < self.alpha < 1, f"alpha: must be in (0, 1), got {self.alpha}")


def amplitude(diffs: Tensor, dz: Tensor, share: float) -> float:
    """The a for which a · dz [m] ⊗ u carries `share` of the energy of diffs [m, d] (centered) plus it (u a unit
    vector)."""
    existing = float(diffs.float().pow(2).sum(1).mean())
    planted = float(dz.float().pow(2).mean())
    return math.sqrt(share / (1.0 - share) * existing / max(planted, 1e-12))


def plant(x: Tensor, z: Tensor, u: Tensor, a: float) -> Tensor:
    """x [n, d] + a · z [n] ⊗ u [d], in float32."""
    return x.float() + a * z.float()[:, None] * u.float()[None, :]


def beats_text(margins: np.ndarray, text_margins: np.ndarray, alpha: float, seed: int) -> bool:
    """Q1's "beats_text" on one set of test-pair margins: accuracy's Wilson interval above 0.5, and McNemar's test
    against the text baseline's margins on the same pairs at p < alpha with the probe ahead."""
    acc = accuracies(margins, PairTruth())
    vs = against_baselines(margins, {"text": text_margins}, PairTruth(), seed)["text"]
    return acc["acc_lo"] is not None and acc["acc_lo"] > 0.5 and vs["p"] < alpha and (vs["diff"] or 0.0) > 0


def planted_power(kind: str, data: Mapping[str, ProbeData], signal: Mapping[str, Tensor], text_margins: np.ndarray,
                  fit: FitConfig, cfg: PlantedPowerConfig = PlantedPowerConfig()) -> dict[str, Any]:
    """The detection rate of a planted reward direction at each share, and the minimal detectable effect.

    Args:
        kind: the probe kind ("linear" or "mlp"), as the sweep fitted the cell.
        data: "train", "val" and "test" ProbeData of the cell (pairs as (chosen row, rejected row)).
        signal: per split, `[n]` each row's reward signal (true reward, or the label).
        text_margins: `[m_test]` the strongest text baseline's margins on the test pairs.
        fit: the cell's fitter settings.

    Returns:
        {"mde": the smallest share detected in ≥ power of plants (None: none was), "curve": [{"share", "detected"
        (the rate), "hits", "snr"}], and the settings}.
    """
    mu, sd = float(signal["train"].float().mean()), float(signal["train"].float().std())
    z = {name: (s.float() - mu) / (sd if sd > 0 else 1.0) for name, s in signal.items()}
    pairs = data["train"].pairs
    diffs = data["train"].x[pairs[:, 0]].float() - data["train"].x[pairs[:, 1]].float()  # [m, d]
    diffs = diffs - diffs.mean(0)  # a difference every pair shares is an offset, not noise that hides the plant
    dz = z["train"][pairs[:, 0]] - z["train"][pairs[:, 1]]  # [m]
    gen = torch.Generator().manual_seed(cfg.seed)
    curve = []
    for share in cfg.shares:
        a = amplitude(diffs, dz, share)
        hits, snr = 0, []
        for j in range(cfg.n_plants):
            u = diffs.T @ torch.randn(diffs.shape[0], generator=gen)  # [d]
            u = u / u.norm()
            planted = {name: dataclasses.replace(part, x=plant(part.x, z[name], u, a)) for name, part in data.items()}
            probe, _ = fit_probe(kind, planted["train"], planted.get("val"), fit)
            test = planted["test"]
            margins = pair_margins(predict(probe, test.x), test.pairs)
            hits += beats_text(margins, text_margins, cfg.alpha, cfg.seed + j)
            snr.append(a * float(dz.pow(2).mean().sqrt()) / max(float((diffs @ u).std()), 1e-12))
        curve.append({"share": share, "detected": hits / cfg.n_plants, "hits": hits, "snr": float(np.mean(snr))})
        if hits / cfg.n_plants >= cfg.power:
            break
    mde = next((c["share"] for c in curve if c["detected"] >= cfg.power), None)
    return {"mde": mde, "curve": curve, "n_plants": cfg.n_plants, "power": cfg.power, "alpha": cfg.alpha,
            "max_share": cfg.shares[-1]}
