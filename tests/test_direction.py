"""Direction against update: the RL update's alignment with the reward probe's direction, with a random baseline."""
import math

import numpy as np
import pytest
import torch

from rsearch.probes import LinearProbe
from rsearch.analysis.direction import capture_both, direction_vs_update, layer_alignment, random_cosines
from test_compare import make_subjects


def _probe(d=64, seed=0):
    p = LinearProbe(d)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p.weight.copy_(torch.randn(d, generator=g))
        p.std.copy_(torch.rand(d, generator=g) + 0.5)
        p.mean.copy_(torch.randn(d, generator=g))
    return p


def test_update_along_the_probe_direction_is_aligned():
    p = _probe()
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(200, 64, generator=g)
    post = pre + 0.3 * p.direction() / p.direction().norm() + 0.01 * torch.randn(200, 64, generator=g)
    r = layer_alignment(pre, post, p, n_random=2000)
    assert r["cos"] > 0.95
    assert r["random_abs_cos_p95"] == pytest.approx(1.96 / math.sqrt(64), rel=0.2)
    assert r["abs_cos_percentile_vs_random"] == 1.0
    assert r["probe_shift"] > 0 and r["probe_shift_lo"] > 0
    # the probe's reading of the update is linear: w·Δ on average
    with torch.no_grad():
        want = float((p(post) - p(pre)).mean())
    assert r["probe_shift"] == pytest.approx(want, rel=1e-5)
    flipped = layer_alignment(post, pre, p, n_random=200)
    assert flipped["cos"] < -0.95 and flipped["probe_shift_hi"] < 0


def test_random_update_is_within_chance():
    p = _probe()
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(100, 64, generator=g)
    hits = 0
    for seed in range(20):
        post = pre + torch.randn(64, generator=torch.Generator().manual_seed(100 + seed))
        r = layer_alignment(pre, post, p, n_random=1000, seed=seed)
        hits += abs(r["cos"]) > r["random_abs_cos_p95"]
    assert hits <= 4  # ~5% expected
    # one verdict over 8 layers: the corrected threshold is the 1 − 0.05/8 quantile, above the 95th percentile
    r8 = layer_alignment(pre, pre + torch.randn(64, generator=g), p, n_random=4000, n_tests=8)
    assert r8["random_abs_cos_family95"] > r8["random_abs_cos_p95"]
    assert r8["random_abs_cos_family95"] == pytest.approx(2.73 / 8, rel=0.15)  # z at 1 − 0.05/16 ≈ 2.73
    rc = random_cosines(torch.ones(64), n=5000, seed=0)
    assert np.quantile(rc, 0.95) == pytest.approx(1.96 / 8, rel=0.15)


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
    got = direction_vs_update(pre_acts, post_acts, probes, position="completion_mean", n_random=300)
    assert [r["layer"] for r in got["rows"]] == s["layers"]
    d = pre.config.hidden_size
    for r in got["rows"]:
        assert -1 <= r["cos"] <= 1 and 0 < r["random_abs_cos_p95"] < 1 and r["d_model"] == d
        assert r["update_norm"] > 0 and r["n_inputs"] == 3  # DPO changed every layer's residual stream
        # the probe's reading of the update agrees with the activations it was computed from
        with torch.no_grad():
            want = float((probes[r["layer"]](post_acts[r["layer"]]) - probes[r["layer"]](pre_acts[r["layer"]])).mean())
        assert r["probe_shift"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    same = direction_vs_update(pre_acts, pre_acts, probes, position="completion_mean", n_random=50)
    assert all(r["update_norm"] == 0 for r in same["rows"])
