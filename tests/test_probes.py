"""probes/: planted-direction recovery per objective × fitter, controls, metrics against scipy/sklearn,
file round-trips and refusal of files that are not probes."""
from __future__ import annotations

import math
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import spearmanr

from rsearch.probes import (FitConfig, LinearProbe, ProbeData, auroc, evaluate, fit_probe, load_probe, make_probe,
                    pairwise_accuracy, pearson, save_probe, spearman, wilson_interval, with_controls)
from rsearch.probes.controls import shuffled_labels
from rsearch.probes.data import column_stats
from rsearch.errors import RsearchError

D = 32


def planted(n: int = 1600, d: int = D, seed: int = 0, noise: float = 0.3, length_effect: float = 0.0):
    """Rows with a rating along a planted direction; pairs (chosen, rejected) of consecutive rows.

    Activations have a nonzero mean and unequal scales, so standardization matters; the planted direction
    is given in raw space.
    """
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 4.0, d)
    x = torch.randn(n, d, generator=g) * scale + 3.0                            # [n, d]
    w = torch.randn(d, generator=g)
    w = w / w.norm()
    reward = ((x - 3.0) / scale) @ w                                             # [n]
    y = reward + noise * torch.randn(n, generator=g)
    lengths = torch.randint(10, 200, (n,), generator=g).float()
    if length_effect:
        lengths = (100 + length_effect * 30 * y + 5 * torch.randn(n, generator=g)).clamp_min(1).round()
    pairs = torch.arange(n).view(-1, 2)
    swap = y[pairs[:, 0]] < y[pairs[:, 1]]
    pairs = torch.where(swap[:, None], pairs.flip(1), pairs)
    raw_direction = w / scale                                                    # gradient of reward wrt x
    return ProbeData(x=x, y=y, pairs=pairs, lengths=lengths), raw_direction / raw_direction.norm()


def splits(data: ProbeData, objective: str):
    if objective == "classification":
        data = ProbeData(data.x, (data.y > 0).float(), data.pairs, data.lengths)
    n = data.n
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    return (data.subset(torch.arange(cut1)), data.subset(torch.arange(cut1, cut2)),
            data.subset(torch.arange(cut2, n)))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


PRIMARY = {"pairwise": "pairwise_acc", "regression": "pearson", "classification": "auroc"}


@pytest.mark.parametrize("objective", ["pairwise", "regression", "classification"])
@pytest.mark.parametrize("fitter", ["fast", "sgd"])
def test_linear_probe_recovers_planted_direction(objective, fitter):
    data, direction = planted()
    train, val, test = splits(data, objective)
    cfg = FitConfig(objective=objective, fitter=fitter, lr=3e-3, max_epochs=8)
    probe, history = fit_probe("linear", train, val, cfg)
    metrics = evaluate(probe, test, objective)
    assert metrics["pairwise_acc"] > 0.85
    assert metrics[PRIMARY[objective]] > 0.85
    assert cos(probe.direction(), direction) > 0.9
    assert history["fitter"] == fitter and history["seconds"] > 0


@pytest.mark.parametrize("fitter", ["fast", "sgd"])
def test_mlp_probe_learns_pairwise(fitter):
    data, direction = planted()
    train, val, test = splits(data, "pairwise")
    cfg = FitConfig(objective="pairwise", fitter=fitter, lr=1e-3, max_epochs=4, hidden=32, max_iter=40)
    probe, history = fit_probe("mlp", train, val, cfg)
    assert evaluate(probe, test, "pairwise")["pairwise_acc"] > 0.8
    assert cos(probe.direction(test.x), direction) > 0.8
    assert history["fitter"] == fitter


def test_fast_fitter_accepts_half_precision_and_matches_float32():
    data, _ = planted(n=800)
    train, val, _test = splits(data, "pairwise")
    half = ProbeData(train.x.to(torch.bfloat16), train.y, train.pairs, train.lengths)
    p32, _ = fit_probe("linear", ProbeData(half.x.float(), train.y, train.pairs), val, FitConfig())
    p16, _ = fit_probe("linear", half, val, FitConfig())
    assert torch.allclose(p16.weight, p32.weight, atol=1e-4)


def test_newton_pairwise_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    data, _ = planted(n=1200, noise=1.0)
    cfg = FitConfig(objective="pairwise", l2=1e-2)
    probe, history = fit_probe("linear", data, None, cfg)
    assert history["method"] == "newton"
    mean, std = column_stats(data.x)
    feats = ((data.x[data.pairs[:, 0]] - data.x[data.pairs[:, 1]]) / std).double().numpy()
    flip = np.arange(len(feats)) % 2 == 1
    feats[flip] *= -1
    m = len(feats)
    ref = LogisticRegression(C=1 / (cfg.l2 * m), fit_intercept=False, tol=1e-10, max_iter=10_000)
    ref.fit(feats, (~flip).astype(int))
    np.testing.assert_allclose(probe.weight.detach().numpy(), ref.coef_[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("objective", ["pairwise", "regression", "classification"])
def test_streamed_chunks_give_the_same_fit(monkeypatch, objective):
    import rsearch.probes.data
    import rsearch.probes.fit_fast
    import rsearch.probes.metrics

    data, _ = planted(n=900)
    train, _, _ = splits(data, objective)
    cfg = FitConfig(objective=objective, fast_method="newton")
    whole, _ = fit_probe("linear", train, None, cfg)
    for module in (rsearch.probes.data, rsearch.probes.fit_fast, rsearch.probes.metrics):
        monkeypatch.setattr(module, "CHUNK_ROWS", 97)
    monkeypatch.setattr(rsearch.probes.fit_fast, "MATERIALIZE_BYTES", 0)
    streamed, _ = fit_probe("linear", train, None, cfg)
    assert torch.allclose(streamed.mean, whole.mean, atol=1e-5)
    assert torch.allclose(streamed.weight, whole.weight, rtol=1e-4, atol=1e-5)


def test_ridge_matches_sklearn_and_lbfgs_agrees_with_newton():
    from sklearn.linear_model import Ridge

    data, _ = planted(n=600)
    cfg = FitConfig(objective="regression", l2=0.1)
    probe, history = fit_probe("linear", data, None, cfg)
    assert history["method"] == "ridge"
    mean, std = column_stats(data.x)
    z = ((data.x - mean) / std).double().numpy()
    ref = Ridge(alpha=cfg.l2 * data.n).fit(z, data.y.double().numpy())
    np.testing.assert_allclose(probe.weight.detach().numpy(), ref.coef_, rtol=1e-4, atol=1e-5)
    assert math.isclose(float(probe.bias.detach()), ref.intercept_, rel_tol=1e-5)

    newton, _ = fit_probe("linear", data, None, FitConfig(fast_method="newton", l2=0.01))
    lbfgs, h = fit_probe("linear", data, None, FitConfig(fast_method="lbfgs", l2=0.01))
    assert h["method"] == "lbfgs"
    assert cos(newton.weight.detach(), lbfgs.weight.detach()) > 0.999


def test_l2_grid_is_chosen_on_validation():
    data, _ = planted(n=800)
    train, val, _ = splits(data, "regression")
    grid = (1e-4, 1.0, 1e4)
    _, history = fit_probe("linear", train, val, FitConfig(objective="regression", l2_grid=grid))
    assert set(history["grid"]) == {repr(v) for v in grid}
    assert history["l2"] != 1e4                      # a huge penalty shrinks w to ~0 and loses on validation
    assert history["val_metric"][0] == max(history["grid"].values())


def test_sgd_restores_best_epoch_and_stops_early():
    data, _ = planted(n=800, noise=2.0)
    train, val, _ = splits(data, "pairwise")
    cfg = FitConfig(fitter="sgd", lr=0.05, max_epochs=15, patience=2)
    probe, history = fit_probe("linear", train, val, cfg)
    assert history["epochs"] < 15
    best = max(history["val_metric"])
    assert history["val_metric"][history["best_epoch"]] == best
    assert evaluate(probe, val, "pairwise")["pairwise_acc"] == pytest.approx(best)


def test_controls_shuffled_near_chance_and_length_uses_lengths():
    data, _ = planted(n=1600, length_effect=1.0)
    train, val, test = splits(data, "pairwise")
    report = with_controls("linear", train, val, test, FitConfig())
    assert report["probe"]["pairwise_acc"] > 0.85
    assert abs(report["shuffled"]["pairwise_acc"] - 0.5) < 0.12
    assert report["length"]["pairwise_acc"] > 0.8          # lengths here track the rating

    unrelated, _ = planted(n=1600, length_effect=0.0)
    train, val, test = splits(unrelated, "pairwise")
    report = with_controls("linear", train, val, test, FitConfig())
    assert abs(report["length"]["pairwise_acc"] - 0.5) < 0.12

    no_lengths = ProbeData(train.x, train.y, train.pairs)
    with pytest.raises(RsearchError, match="length"):
        with_controls("linear", no_lengths, None, no_lengths, FitConfig())


def test_shuffled_labels_flip_pairs_and_permute_y():
    data, _ = planted(n=400)
    shuffled = shuffled_labels(data, seed=3)
    flipped = (shuffled.pairs != data.pairs).any(dim=1).float().mean()
    assert 0.35 < float(flipped) < 0.65
    assert torch.equal(shuffled.y.sort().values, data.y.sort().values)
    assert not torch.equal(shuffled.y, data.y)


def test_pairwise_accuracy_interval_and_ties():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0, 5.0])
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5]])
    acc, lo, hi = pairwise_accuracy(scores, pairs)
    assert acc == pytest.approx(0.5)                     # one win, one tie (half), one loss
    assert lo < acc < hi
    lo10, hi10 = wilson_interval(8, 10)
    assert (lo10, hi10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo_big, hi_big = wilson_interval(800, 1000)
    assert lo_big < 0.8 < hi_big and hi_big - lo_big < hi10 - lo10


def test_evaluate_interval_contains_estimate():
    data, _ = planted(n=600)
    probe, _ = fit_probe("linear", data, None, FitConfig())
    m = evaluate(probe, data, "pairwise")
    assert m["pairwise_acc_lo"] <= m["pairwise_acc"] <= m["pairwise_acc_hi"]
    assert m["n"] == 600 and m["n_pairs"] == 300


def test_rank_metrics_match_scipy_and_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 8, 300).astype(float)        # many ties
    labels = (rng.random(300) < 0.4).astype(float)
    ratings = scores + rng.integers(0, 4, 300)
    assert auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores))
    assert spearman(torch.tensor(scores), torch.tensor(ratings)) == pytest.approx(
        spearmanr(scores, ratings).statistic)
    assert pearson(scores, ratings) == pytest.approx(np.corrcoef(scores, ratings)[0, 1])
    assert math.isnan(pearson(np.ones(5), np.arange(5.0)))


def test_probe_forward_is_differentiable_and_direction_is_raw_gradient():
    data, _ = planted(n=400)
    probe, _ = fit_probe("linear", data, None, FitConfig())
    x = data.x[:3].clone().requires_grad_(True)
    probe(x).sum().backward()
    assert torch.allclose(x.grad, probe.direction().expand(3, -1), atol=1e-6)
    assert probe(data.x[:5].to(torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_round_trip_is_bit_exact(tmp_path, suffix, kind):
    data, _ = planted(n=200)
    probe, _ = fit_probe(kind, data, None, FitConfig(hidden=8, max_iter=5))
    meta = {"model": "organism/pre", "revision": "abc123", "hook": "blocks.2.hook_resid_pre",
            "position": "user_end", "objective": "pairwise", "dataset": "organism-feedback",
            "metrics": {"pairwise_acc": 0.1 + 0.2, "n": 100.0}}
    path = tmp_path / f"layer2{suffix}"
    save_probe(path, probe, meta)
    loaded, got = load_probe(path)
    assert type(loaded) is type(probe)
    for key, value in probe.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded(data.x), probe(data.x))
    assert {k: got[k] for k in meta} == meta
    assert got["kind"] == kind and got["d_model"] == D
    assert got["created"].startswith("20") and "rsearch_version" in got
    assert [p.name for p in tmp_path.iterdir()] == [path.name]     # no temp file left behind


def test_pt_file_loads_with_weights_only(tmp_path):
    path = tmp_path / "p.pt"
    save_probe(path, make_probe("linear", 4), {})
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"header", "tensors"}


class _Boom:
    """Unpickling this would create a file: proof that an arbitrary object ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_loading_refuses_files_that_are_not_probes(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(512))
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(os.urandom(512))
    other_st = tmp_path / "other.safetensors"
    save_file({"embed": torch.zeros(3, 4)}, str(other_st), metadata={"format": "pt"})
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"header": {}, "tensors": {}, "x": _Boom(str(marker))}, f)
    evil_zip = tmp_path / "evil_zip.pt"
    torch.save({"payload": _Boom(str(marker))}, evil_zip)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)

    for path in (junk, junk_st, other_st, evil, evil_zip, plain, tmp_path / "missing.pt",
                 tmp_path / "probe.txt"):
        with pytest.raises(RsearchError) as info:
            load_probe(path)
        assert "\n" not in str(info.value) and str(path.name) in str(info.value)
    assert not marker.exists()
    # the payload is live (never run here): its opcodes import Path.touch and call it on the marker
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(evil.read_bytes())]
    args = {arg for _, arg in ops}
    assert ("REDUCE", None) in ops and {"pathlib", "Path.touch", marker.name} <= args


def test_loading_refuses_probe_with_wrong_tensors(tmp_path):
    path = tmp_path / "p.safetensors"
    save_probe(path, make_probe("linear", 4), {})
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    save_file({"mean": torch.zeros(4)}, str(path), metadata=header)
    with pytest.raises(RsearchError, match="do not match"):
        load_probe(path)


def test_save_failure_leaves_no_file(tmp_path):
    path = tmp_path / "p.safetensors"
    with pytest.raises(RsearchError, match="not JSON-serializable"):
        save_probe(path, make_probe("linear", 4), {"metrics": {"bad": object()}})
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_raise_rsearch_error():
    with pytest.raises(RsearchError, match="unknown probe kind"):
        make_probe("tree", 4)
    with pytest.raises(RsearchError, match="objective"):
        FitConfig.from_dict({"objective": "ranking"})
    with pytest.raises(RsearchError, match="batch_sz"):
        FitConfig.from_dict({"batch_sz": 8})
    data, _ = planted(n=100)
    with pytest.raises(RsearchError, match="pairs"):
        fit_probe("linear", ProbeData(data.x, data.y), None, FitConfig())
    with pytest.raises(RsearchError, match="0/1"):
        fit_probe("linear", data, None, FitConfig(objective="classification"))
    with pytest.raises(RsearchError, match="y must have shape"):
        ProbeData(data.x, data.y[:5])


def test_subset_keeps_only_pairs_inside():
    x = torch.randn(6, 3)
    data = ProbeData(x, torch.arange(6.0), pairs=torch.tensor([[0, 1], [2, 5], [4, 3]]))
    sub = data.subset(torch.tensor([3, 4, 0, 1]))
    assert sub.pairs.tolist() == [[2, 3], [1, 0]]
    assert torch.equal(sub.x[1], x[4])
    assert isinstance(make_probe("linear", 3), LinearProbe)
