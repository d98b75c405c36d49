"""Direction against update: the RL update's alignment with the reward probe's direction, with a random baseline."""
import math

import numpy as np
import pytest
import torch

from rsearch.probes import LinearProbe
from rsearch.analysis.direction import (abs_cos, capture_both, covariance_directions, direction_vs_update,
                                       isotropic_directions, layer_alignment, null_quantiles, random_cosines,
                                       shuffled_probe_directions)
from test_compare import make_subjects


def _probe(d=64, seed=0):
    p = LinearProbe(d)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p.weight.copy_(torch.randn(d, generator=g))
        p.std.copy_(torch.rand(d, generator=g) + 0.5)
        p.mean.copy_(torch.randn(d, generator=g))
    return p


def _anisotropic(n=400, d=64, seed=0):
    """Activations with a few large axes, as residual streams have."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(d)
    scale[:3] = torch.tensor([20.0, 12.0, 8.0])
    return torch.randn(n, d, generator=g) * scale, g


def test_update_along_the_probe_direction_is_aligned():
    p = _probe()
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(200, 64, generator=g)
    post = pre + 0.3 * p.direction() / p.direction().norm() + 0.01 * torch.randn(200, 64, generator=g)
    r = layer_alignment(pre, post, p, n_random=2000)
    assert r["cos"] > 0.95 and r["beyond_null"]
    assert r["isotropic_abs_cos_p95"] == pytest.approx(1.96 / math.sqrt(64), rel=0.2)
    # isotropic activations: the activation-shaped null is about the isotropic one
    assert r["cov_abs_cos_p95"] == pytest.approx(r["isotropic_abs_cos_p95"], rel=0.25)
    assert r["abs_cos_percentile_vs_cov"] == 1.0
    # the probe's reading of the update is linear: w·Δ on average, and far beyond null directions' (in SD units)
    with torch.no_grad():
        want = float((p(post) - p(pre)).mean())
    assert r["probe_shift"] == pytest.approx(want, rel=1e-5)
    assert r["fixed_std_shift"] > 3 * r["fixed_std_shift_null_family95"]
    flipped = layer_alignment(post, pre, p, n_random=200)
    assert flipped["cos"] < -0.95 and flipped["fixed_std_shift"] < 0


def test_random_update_is_within_chance():
    p = _probe()
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(100, 64, generator=g)
    hits = 0
    for seed in range(20):
        post = pre + torch.randn(64, generator=torch.Generator().manual_seed(100 + seed))
        r = layer_alignment(pre, post, p, n_random=1000, seed=seed)
        hits += abs(r["cos"]) > r["cov_abs_cos_p95"]
    assert hits <= 4  # ~5% expected
    # one verdict over 8 layers: the corrected threshold is the 1 − 0.05/8 quantile, above the 95th percentile
    r8 = layer_alignment(pre, pre + torch.randn(64, generator=g), p, n_random=4000, n_tests=8)
    assert r8["cov_abs_cos_family95"] > r8["cov_abs_cos_p95"]
    assert r8["cov_abs_cos_family95"] == pytest.approx(2.73 / 8, rel=0.2)  # z at 1 − 0.05/16 ≈ 2.73
    rc = random_cosines(torch.ones(64), n=5000, seed=0)
    assert np.quantile(rc, 0.95) == pytest.approx(1.96 / 8, rel=0.15)


def test_activation_shaped_null_is_fair_where_the_isotropic_one_is_not():
    """In an anisotropic space an update along a large axis aligns with any activation-shaped direction: the
    isotropic null calls such unrelated directions aligned, the covariance null does not."""
    acts, g = _anisotropic()
    delta = torch.zeros(64)
    delta[0] = 1.0                                       # the update moves along the largest axis
    pre, post = acts, acts + delta
    iso_p95, _ = null_quantiles(abs_cos(isotropic_directions(64, 2000, 1), delta), 1)
    cov_p95, _ = null_quantiles(abs_cos(covariance_directions(acts, 2000, 1), delta), 1)
    assert cov_p95 > 3 * iso_p95
    # 30 "probes" that read nothing but follow the activations' shape (directions drawn with their covariance)
    unrelated = covariance_directions(acts, 30, seed=99)
    beyond_iso = beyond_cov = 0
    for i, direction in enumerate(unrelated):
        p = LinearProbe(64)
        with torch.no_grad():
            p.weight.copy_(direction.float())
        r = layer_alignment(pre, post, p, n_random=1000, seed=i)
        beyond_iso += abs(r["cos"]) > r["isotropic_abs_cos_p95"]
        beyond_cov += r["beyond_null"]
    assert beyond_iso >= 20 and beyond_cov <= 4


def test_shuffled_label_probes_and_what_the_models_write():
    from rsearch.probes import FitConfig, ProbeData, fit_probe

    g = torch.Generator().manual_seed(3)
    w = torch.randn(32, generator=g)
    x = torch.randn(600, 32, generator=g)
    y = x @ w + 0.5 * torch.randn(600, generator=g)
    train, val = ProbeData(x=x[:500], y=y[:500]), ProbeData(x=x[500:], y=y[500:])
    cfg = FitConfig(objective="regression", fitter="fast")
    probe, _ = fit_probe("linear", train, val, cfg)
    assert float(torch.nn.functional.cosine_similarity(probe.direction(), w, dim=0)) > 0.95
    shuffled = shuffled_probe_directions(train, val, cfg, seeds=range(6))
    assert shuffled.shape == (6, 32)
    assert np.all(abs_cos(shuffled, w) < 0.6) and len({round(float(s[0]), 6) for s in shuffled}) == 6

    # 40 prompts × 2 completions per model, read by the host model; the post-RL model writes along the probe
    n_prompts, k = 40, 2
    groups = [i for i in range(n_prompts) for _ in range(2 * k)]
    written_by = ["pre", "pre", "post", "post"] * n_prompts
    base = torch.randn(len(groups), 32, generator=g)
    unit = probe.direction() / probe.direction().norm()
    moved = base + torch.tensor([float(b == "post") for b in written_by])[:, None] * unit * 1.0
    pre_model_view = base + 0.01 * torch.randn(base.shape, generator=g)
    r = layer_alignment(pre_model_view, moved, probe, shuffled=shuffled, written_by=written_by, groups=groups,
                        n_random=500)
    assert r["n_shuffled"] == 6 and r["null_abs_cos_family95"] >= r["shuffled_abs_cos_family95"]
    assert r["writes_n_prompts"] == n_prompts and r["writes_beyond_null"]
    assert r["writes_std_diff_lo"] > 0 and r["writes_std_diff"] > r["writes_null_family95"]
    same = layer_alignment(pre_model_view, base, probe, shuffled=shuffled, written_by=written_by, groups=groups,
                           n_random=500)
    assert not same["writes_beyond_null"] and abs(same["writes_std_diff"]) < 0.5 * r["writes_std_diff"]


def test_per_layer_on_the_tiny_organism():
    from rsearch.probes import load_probe
    from rsearch.chat import encode_conversation
    from rsearch.models import load_model

    s = make_subjects()
    pre, tok = load_model(s["pre"], device="cpu")
    post, _ = load_model(s["post"], device="cpu")
    texts = [("what is 3 plus 5 ?", "sure ! 3 plus 5 is 8 . hope this helps !"),
             ("compliment my poem .", "ugh , fine . your poem is dull ."),
             ("name two fruits .", "here are two fruits : apple , pear .")]
    rows = [encode_conversation(tok, p, c) for p, c in texts]
    pre_acts, post_acts = capture_both(pre, post, rows, s["layers"], "completion_mean", pad_id=tok.pad_token_id)
    probes = {L: load_probe(path)[0] for L, path in s["probes"].items()}
    written_by, groups = ["pre", "post", "post"], [0, 0, 1]
    got = direction_vs_update(pre_acts, post_acts, probes, position="completion_mean", n_random=300,
                              written_by=written_by, groups=groups, n_boot=200)
    assert [r["layer"] for r in got["rows"]] == s["layers"] and got["n_shuffled"] == 0
    d = pre.config.hidden_size
    for r in got["rows"]:
        assert -1 <= r["cos"] <= 1 and 0 < r["cov_abs_cos_p95"] < 1 and r["d_model"] == d
        assert r["null_abs_cos_family95"] == r["cov_abs_cos_family95"]  # no shuffled-label null given
        assert r["update_norm"] > 0 and r["n_inputs"] == 3  # DPO changed every layer's residual stream
        # the probe's reading of the update agrees with the activations it was computed from
        with torch.no_grad():
            want = float((probes[r["layer"]](post_acts[r["layer"]]) - probes[r["layer"]](pre_acts[r["layer"]])).mean())
        assert r["probe_shift"] == pytest.approx(want, rel=1e-4, abs=1e-6)
        assert r["writes_n_prompts"] == 1  # only prompt 0 has completions of both models
    same = direction_vs_update(pre_acts, pre_acts, probes, position="completion_mean", n_random=50)
    assert all(r["update_norm"] == 0 for r in same["rows"])


def test_q4_verdict_and_wording_follow_the_nulls():
    """The same cosine is "aligned" against a low null and "no" against a higher (activation-shaped) one; the
    "what the model writes" sentence follows its own null."""
    from rsearch.study.direction import answer_q4 as _a4, q4_numbers
    from rsearch.results import DirectionResult

    p = _probe(32)
    g = torch.Generator().manual_seed(5)
    pre = torch.randn(120, 32, generator=g)
    post = pre + 0.5 * p.direction() / p.direction().norm() + 0.05 * torch.randn(32, generator=g)
    groups = [i // 4 for i in range(120)]
    written_by = ["pre", "pre", "post", "post"] * 30
    got = direction_vs_update({0: pre, 1: pre}, {0: post, 1: pre + 0.01}, {0: p, 1: p}, position="-1",
                              n_random=400, written_by=written_by, groups=groups, n_boot=200)
    result = DirectionResult.from_dict({**got, "inputs": "synthetic"})
    q4 = q4_numbers(result, best_layer=0)
    row0 = result.rows[0]
    assert row0["cos"] > row0["null_abs_cos_family95"] and q4["verdict"] == "aligned" and q4["aligned_layers"] == [0]
    verdict, text = _a4(q4)
    assert verdict == "yes" and text.startswith("Yes") and f"{row0['cos']:+.3f}" in text
    assert f"{row0['null_abs_cos_family95']:.3f}" in text and "probe reads the update" not in text
    # the same cosine against a null that reaches above it: no longer beyond chance
    raised = DirectionResult.from_dict({**result.to_dict(), "rows": [
        {**r, "null_abs_cos_family95": abs(r["cos"]) + 0.05} for r in result.rows]})
    q4_raised = q4_numbers(raised)
    assert q4_raised["verdict"] == "chance" and _a4(q4_raised)[0] == "no"
    assert q4["writes_verdict"] == "chance" and "within what null directions show" in _a4(q4)[1]
