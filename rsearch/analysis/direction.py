"""Direction against update: does RL fine-tuning move activations along the reward probe's direction?

For each layer L, the same inputs (conversations) go through the pre- and the post-RL model; the update at L is
the mean over inputs of (post resid at L − pre resid at L) at the probe's position, `[d_model]`. Its cosine
with the reward probe's direction at L (`probe.direction()`: the raw-space gradient of the score) says whether
fine-tuning pushed the residual stream along what the probe reads. For scale: the |cosine| of the update with
random Gaussian directions in d_model dimensions (its 95th percentile; ~1.96/√d for large d, and the
1 − 0.05/n_layers quantile, the threshold a verdict over all layers must pass to keep its 5% false-positive
rate), and the cosine of the update with the mean activation itself (a change of overall norm would show up
there instead).
The probe's own reading of the update, mean(probe(post) − probe(pre)) on the same inputs, is given with a
bootstrap CI.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rsearch.activations import extract
from rsearch.analysis.stats import bootstrap_ci
from rsearch.positions import parse_position


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    d = float(a.norm() * b.norm())
    return float(a @ b / d) if d > 0 else float("nan")


def random_cosines(vector: torch.Tensor, n: int = 1000, seed: int = 0) -> np.ndarray:
    """|cos| of `vector` with n Gaussian directions (seeded): the scale of chance alignment in d_model dims."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, vector.numel(), generator=g, dtype=torch.float64)  # [n, d]
    v = vector.double().flatten()
    cos = (r @ v) / (r.norm(dim=1) * v.norm()).clamp_min(1e-300)
    return cos.abs().numpy()


def layer_alignment(pre_acts: torch.Tensor, post_acts: torch.Tensor, probe, *, n_random: int = 1000, seed: int = 0,
                    n_boot: int = 1000, n_tests: int = 1) -> dict[str, float]:
    """Alignment at one layer.

    Args:
        pre_acts, post_acts: `[n_inputs, d_model]` activations of the same inputs in the pre- and post-RL model.
        probe: the reward probe trained at this layer (and position).
        n_tests: how many layers one verdict looks at (Bonferroni: `random_abs_cos_family95` is the
            1 − 0.05/n_tests quantile of the random |cos|).
    """
    delta = (post_acts.double() - pre_acts.double()).mean(0)        # [d_model]
    direction = probe.direction().double().cpu()                    # [d_model]
    rand = random_cosines(delta, n_random, seed)
    with torch.no_grad():
        shift = (probe(post_acts.float()) - probe(pre_acts.float())).double().numpy()  # [n_inputs]
    lo, hi = bootstrap_ci(shift, n_boot=n_boot, seed=seed)
    cos = _cos(delta, direction)
    return {
        "cos": cos,
        "random_abs_cos_p95": float(np.quantile(rand, 0.95)),
        "random_abs_cos_family95": float(np.quantile(rand, 1 - 0.05 / n_tests)),
        "random_abs_cos_mean": float(rand.mean()),
        "abs_cos_percentile_vs_random": float((rand < abs(cos)).mean()) if cos == cos else float("nan"),
        "cos_update_vs_mean_activation": _cos(delta, pre_acts.double().mean(0)),
        "update_norm": float(delta.norm()),
        "update_rel_norm": float(delta.norm() / pre_acts.double().norm(dim=1).mean().clamp_min(1e-300)),
        "probe_shift": float(shift.mean()), "probe_shift_lo": lo, "probe_shift_hi": hi,
        "d_model": int(delta.numel()), "n_inputs": int(pre_acts.shape[0]),
    }


def direction_vs_update(pre_acts: dict[int, torch.Tensor], post_acts: dict[int, torch.Tensor], probes: dict[int, Any],
                        *, position: str, hook_kind: str = "resid_pre", n_random: int = 1000, seed: int = 0
                        ) -> dict[str, Any]:
    """Per layer alignment (see the module docstring) for every layer that has a probe.

    Args:
        pre_acts, post_acts: {layer: `[n_inputs, d_model]`} activations of the same inputs at `position`.
        probes: {layer: reward probe trained at that layer and position}.
    """
    rows = []
    for layer in sorted(probes):
        r = layer_alignment(pre_acts[layer], post_acts[layer], probes[layer], n_random=n_random, seed=seed + layer,
                            n_tests=len(probes))
        rows.append({"layer": layer, "hook": f"blocks.{layer}.hook_{hook_kind}", **r})
    return {"position": position, "n_random": n_random, "rows": rows}


def capture_both(pre_model, post_model, rows, layers: Sequence[int], position: str, *, pad_id: int,
                 hook_kind: str = "resid_pre", batch_size: int = 16, progress: bool = False
                 ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """{layer: `[n_rows, d_model]`} activations of the same rows in each model at `position`."""
    position = parse_position(position).spec
    hooks = [f"blocks.{L}.hook_{hook_kind}" for L in layers]
    got = [extract(m, rows, hooks, [position], pad_id=pad_id, batch_size=batch_size, progress=progress)
           for m in (pre_model, post_model)]
    return tuple({L: g[(h, position)] for L, h in zip(layers, hooks)} for g in got)  # type: ignore[return-value]
