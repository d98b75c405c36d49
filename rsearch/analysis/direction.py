"""Direction against update: did RL fine-tuning move activations along the reward probe's direction?

Two questions, kept apart:

1. **The parameters changed on fixed texts.** The same inputs go through the pre- and the post-RL model; the
   update at layer L is the mean over inputs of (post resid − pre resid) at the probe's position, `[d_model]`.
   Its cosine with the reward probe's direction (`probe.direction()`: the raw-space gradient of the score) is set
   against two null distributions of directions that know nothing of reward:
   - *activation-shaped random directions*: Gaussian with the empirical covariance of the activations at L (each
     model's centred on its own mean, so the update itself does not shape them). In an
     anisotropic residual stream any direction that follows the activations' large axes aligns with an update
     more than an isotropic direction does, so isotropic directions understate chance (kept for scale only);
   - *shuffled-label probes*: the same fitter on the probe's own training data with shuffled labels (several
     seeds): what a probe's direction looks like when there is no reward to read.
   A layer is beyond chance when |cos| exceeds both nulls' 1 − 0.05/n_layers quantile (Bonferroni over the
   layers one verdict looks at). With few shuffled seeds that quantile is taken from a centred normal with
   their root-mean-square cosine. The probe's reading of the update, w·Δ, is that cosine times two norms: it
   is given as a standardized shift (divided by the SD of the probe's score over the inputs) beside the same
   number for the null directions, never with an interval over inputs (any fixed direction would pass that).
2. **What the model writes changed.** The probe's score, read through its host model, on each model's own
   completions: per prompt, the mean over the post-RL model's completions minus the mean over the pre-RL
   model's, averaged over prompts and divided by the SD of the score over all completions; a bootstrap CI
   over prompts; and the same standardized difference for the null directions (two sets of completions that
   differ in anything differ along many directions).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rsearch.activations import extract
from rsearch.analysis.stats import Z_95, bootstrap_ci
from rsearch.hooks import HookPoint
from rsearch.positions import parse_position
from rsearch.probes import fit_probe
from rsearch.probes.controls import shuffled_labels


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    d = float(a.norm() * b.norm())
    return float(a @ b / d) if d > 0 else float("nan")


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; a zero row (no direction) becomes NaN."""
    norm = x.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, x / norm.clamp_min(1e-300), torch.full_like(x, float("nan")))


def isotropic_directions(d: int, n: int, seed: int = 0) -> torch.Tensor:
    """`[n, d]` unit directions, uniform on the sphere (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return _unit_rows(torch.randn(n, d, generator=g, dtype=torch.float64))


def covariance_directions(acts: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """`[n, d]` unit directions drawn from N(0, Σ), Σ the empirical covariance of `acts` `[m, d]` (seeded).

    z `[n, m]` standard normal times the centred activations is exactly N(0, Σ·(m − 1)): no d × d matrix is formed.
    """
    x = acts.double()
    centred = x - x.mean(0)                                                  # [m, d]
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, x.shape[0], generator=g, dtype=torch.float64)         # [n, m]
    return _unit_rows(z @ centred)


def shuffled_probe_directions(train, val, cfg, seeds: Sequence[int], kind: str = "linear") -> torch.Tensor:
    """`[len(seeds), d]` directions of probes fitted like the reward probe (`kind`, FitConfig `cfg`) on `train`
    / `val` ProbeData whose labels are shuffled (and pairs flipped) with each seed."""
    out = []
    for s in seeds:
        probe, _ = fit_probe(kind, shuffled_labels(train, s), None if val is None else shuffled_labels(val, s + 7919),
                             cfg.replace(seed=s))
        out.append(probe.direction().double().cpu())
    return torch.stack(out)


def random_cosines(vector: torch.Tensor, n: int = 1000, seed: int = 0) -> np.ndarray:
    """|cos| of `vector` with n isotropic Gaussian directions (seeded): chance alignment in d_model dims."""
    return abs_cos(isotropic_directions(vector.numel(), n, seed), vector)


def abs_cos(directions: torch.Tensor, vector: torch.Tensor) -> np.ndarray:
    """`[n]` |cos| of each row of `directions` `[n, d]` with `vector` `[d]`."""
    v = vector.double().flatten()
    return (_unit_rows(directions.double()) @ (v / v.norm().clamp_min(1e-300))).abs().numpy()


def null_quantiles(values: np.ndarray, n_tests: int, *, normal: bool = False) -> tuple[float, float]:
    """(95th percentile, 1 − 0.05/n_tests quantile) of |values|; `normal`: of a centred normal with their RMS
    (for a handful of draws, whose empirical upper quantiles are just their maximum)."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if normal:
        from scipy.stats import norm

        rms = float(np.sqrt(np.mean(v ** 2)))
        return rms * Z_95, rms * float(norm.ppf(1 - 0.05 / (2 * n_tests)))
    return float(np.quantile(v, 0.95)), float(np.quantile(v, 1 - 0.05 / n_tests))


def standardized_shift(directions: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> np.ndarray:
    """`[n]` per direction `[n, d]`: mean over inputs of (post − pre)·direction over the SD of pre·direction."""
    dirs = directions.double().T                                             # [d, n]
    shift = ((post.double() - pre.double()) @ dirs).mean(0)                  # [n]
    return _over_sd(shift, (pre.double() @ dirs).std(0)).numpy()


def _over_sd(x: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """x / sd, NaN where the projection does not vary (e.g. a position that is the same token in every row)."""
    return torch.where(sd > 1e-9, x / sd.clamp_min(1e-300), torch.full_like(x, float("nan")))


def _per_prompt_diffs(proj: torch.Tensor, written_by: Sequence[str], groups: Sequence[Any]
                      ) -> tuple[torch.Tensor, list[Any]]:
    """`[n_prompts, n_dirs]` per prompt: mean projection over post-written rows − over pre-written rows."""
    keys = sorted({g for g, w in zip(groups, written_by) if w == "post"} &
                  {g for g, w in zip(groups, written_by) if w == "pre"}, key=str)
    index = {k: i for i, k in enumerate(keys)}
    sums = torch.zeros(2, len(keys), proj.shape[1], dtype=torch.float64)
    counts = torch.zeros(2, len(keys), 1, dtype=torch.float64)
    for r, (g, w) in enumerate(zip(groups, written_by)):
        if g in index:
            side = int(w == "post")
            sums[side, index[g]] += proj[r]
            counts[side, index[g]] += 1
    means = sums / counts
    return means[1] - means[0], keys


def writes_shift(directions: torch.Tensor, acts: torch.Tensor, written_by: Sequence[str], groups: Sequence[Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per direction, the standardized difference of what the two models write (see the module docstring).

    Returns:
        (`[n_dirs]` standardized differences, `[n_prompts, n_dirs]` standardized per-prompt differences).
    """
    proj = acts.double() @ directions.double().T                             # [n_rows, n_dirs]
    diffs, _ = _per_prompt_diffs(proj, written_by, groups)                   # [n_prompts, n_dirs]
    per_prompt = _over_sd(diffs, proj.std(0))
    return per_prompt.mean(0).numpy(), per_prompt.numpy()


def layer_alignment(pre_acts: torch.Tensor, post_acts: torch.Tensor, probe, *, shuffled: torch.Tensor | None = None,
                    written_by: Sequence[str] | None = None, groups: Sequence[Any] | None = None,
                    n_random: int = 1000, seed: int = 0, n_boot: int = 2000, n_tests: int = 1) -> dict[str, Any]:
    """Alignment at one layer against the nulls (see the module docstring).

    Args:
        pre_acts, post_acts: `[n_inputs, d_model]` activations of the same inputs in the pre- and post-RL model.
        probe: the reward probe trained at this layer (and position); its host model is the post-RL model.
        shuffled: `[k, d_model]` directions of shuffled-label probes at this layer (None: that null is left out).
        written_by, groups: `[n_inputs]` which model wrote each input ("pre"/"post") and its prompt; given, the
            "what the model writes" half is computed from `post_acts` (the host's reading).
        n_tests: how many layers one verdict looks at (Bonferroni).
    """
    delta = (post_acts.double() - pre_acts.double()).mean(0)                 # [d_model]
    direction = probe.direction().double().cpu()                             # [d_model]
    d = int(delta.numel())
    # each model's activations centred on their own mean: the shape of the activations, without the update itself
    within = torch.cat([pre_acts - pre_acts.mean(0), post_acts - post_acts.mean(0)])  # [2 n_inputs, d]
    cov = covariance_directions(within, n_random, seed)                     # [n_random, d]
    iso_p95, _ = null_quantiles(abs_cos(isotropic_directions(d, n_random, seed + 1), delta), n_tests)
    cov_cos = abs_cos(cov, delta)
    cov_p95, cov_fam = null_quantiles(cov_cos, n_tests)
    cos = _cos(delta, direction)
    out: dict[str, Any] = {
        "cos": cos, "isotropic_abs_cos_p95": iso_p95,
        "cov_abs_cos_p95": cov_p95, "cov_abs_cos_family95": cov_fam, "cov_abs_cos_mean": float(cov_cos.mean()),
        "abs_cos_percentile_vs_cov": float((cov_cos < abs(cos)).mean()) if cos == cos else float("nan"),
        "cos_update_vs_mean_activation": _cos(delta, pre_acts.double().mean(0)),
        "update_norm": float(delta.norm()),
        "update_rel_norm": float(delta.norm() / pre_acts.double().norm(dim=1).mean().clamp_min(1e-300)),
        "d_model": d, "n_inputs": int(pre_acts.shape[0]), "n_shuffled": 0,
    }
    nulls = [cov]
    if shuffled is not None and len(shuffled):
        sh_cos = np.asarray([_cos(delta, s) for s in shuffled])
        sh_p95, sh_fam = null_quantiles(sh_cos, n_tests, normal=True)
        out.update({"shuffled_cos": sh_cos.tolist(), "shuffled_abs_cos_mean": float(np.abs(sh_cos).mean()),
                    "shuffled_abs_cos_p95": sh_p95, "shuffled_abs_cos_family95": sh_fam,
                    "n_shuffled": int(len(shuffled))})
        nulls.append(shuffled.double())
    nulls_fam = [v for v in (cov_fam, out.get("shuffled_abs_cos_family95", float("nan"))) if v == v]
    out["null_abs_cos_family95"] = max(nulls_fam) if nulls_fam else float("nan")
    out["beyond_null"] = bool(abs(cos) > out["null_abs_cos_family95"])  # False where either is NaN

    # the probe's own reading of the update, standardized, beside the null directions' (fixed texts)
    null_dirs = torch.cat(nulls)
    with torch.no_grad():
        out["probe_shift"] = float((probe(post_acts.float()) - probe(pre_acts.float())).double().mean())
    out["fixed_std_shift"] = float(standardized_shift(direction[None], pre_acts, post_acts)[0])
    _, fam = null_quantiles(standardized_shift(null_dirs, pre_acts, post_acts), n_tests)
    out["fixed_std_shift_null_family95"] = fam

    if written_by is not None and groups is not None:
        probe_d, per_prompt = writes_shift(direction[None], post_acts, written_by, groups)
        lo, hi = bootstrap_ci(per_prompt[:, 0], n_boot=n_boot, seed=seed)
        null_d, _ = writes_shift(null_dirs, post_acts, written_by, groups)
        p95, fam = null_quantiles(null_d, n_tests)
        out.update({"writes_std_diff": float(probe_d[0]), "writes_std_diff_lo": lo, "writes_std_diff_hi": hi,
                    "writes_null_p95": p95, "writes_null_family95": fam,
                    "writes_beyond_null": bool(abs(probe_d[0]) > fam), "writes_n_prompts": int(per_prompt.shape[0])})
    return out


def direction_vs_update(pre_acts: dict[int, torch.Tensor], post_acts: dict[int, torch.Tensor], probes: dict[int, Any],
                        *, position: str, hook_kind: str = "resid_pre", n_random: int = 1000, seed: int = 0,
                        shuffled: dict[int, torch.Tensor] | None = None, written_by: Sequence[str] | None = None,
                        groups: Sequence[Any] | None = None, n_boot: int = 2000) -> dict[str, Any]:
    """Per layer alignment (see the module docstring) for every layer that has a probe.

    Args:
        pre_acts, post_acts: {layer: `[n_inputs, d_model]`} activations of the same inputs at `position`.
        probes: {layer: reward probe trained at that layer and position}.
        shuffled: {layer: `[k, d_model]` shuffled-label probe directions}.
        written_by, groups: `[n_inputs]` which model wrote each input, and its prompt.
    """
    rows = []
    for layer in sorted(probes):
        r = layer_alignment(pre_acts[layer], post_acts[layer], probes[layer], n_random=n_random, seed=seed + layer,
                            n_tests=len(probes), shuffled=(shuffled or {}).get(layer), written_by=written_by,
                            groups=groups, n_boot=n_boot)
        rows.append({"layer": layer, "hook": HookPoint(layer, hook_kind).name, **r})
    return {"position": position, "n_random": n_random, "rows": rows,
            "n_shuffled": max((r["n_shuffled"] for r in rows), default=0)}


def capture_both(pre_model, post_model, rows, layers: Sequence[int], position: str, *, pad_id: int,
                 hook_kind: str = "resid_pre", batch_size: int = 16, progress: bool = False
                 ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """{layer: `[n_rows, d_model]`} activations of the same rows in each model at `position`."""
    position = parse_position(position).spec
    hooks = [HookPoint(L, hook_kind).name for L in layers]
    got = [extract(m, rows, hooks, [position], pad_id=pad_id, batch_size=batch_size, progress=progress)
           for m in (pre_model, post_model)]
    return tuple({L: g[(h, position)] for L, h in zip(layers, hooks)} for g in got)  # type: ignore[return-value]
