"""The planted-signal power analysis: a direction carrying the reward at a large share of the variance is found by
Q1's rule in every plant, at a tiny share in none, and with no signal at all the rule's false positives stay near α."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rsearch.analysis.planted_power import PlantedPowerConfig, amplitude, plant, planted_power
from rsearch.errors import RsearchError
from rsearch.probes import FitConfig, ProbeData

FIT = FitConfig(objective="pairwise", fitter="fast")


def _noise(seed: int, m: dict[str, int], d: int = 16, scale: float = 3.0):
    """Activations with no reward in them: per split, 2m rows (chosen, rejected) of Gaussian noise, and a true
    reward that the labels follow (chosen > rejected)."""
    g = torch.Generator().manual_seed(seed)
    data, signal = {}, {}
    for name, k in m.items():
        x = scale * torch.randn(2 * k, d, generator=g)
        reward = torch.randn(2 * k, generator=g)
        reward = torch.stack([reward.view(k, 2).max(1).values, reward.view(k, 2).min(1).values], 1).flatten()
        data[name] = ProbeData(x=x, y=torch.tensor([1.0, 0.0] * k), pairs=torch.arange(2 * k).view(k, 2))
        signal[name] = reward
    text = np.random.default_rng(seed).normal(size=m["test"])  # a text baseline at chance
    return data, signal, text


SPLITS = {"train": 200, "val": 50, "test": 150}


def test_a_plant_carries_the_share_of_the_pair_differences_it_is_asked_to():
    x = torch.randn(4000, 8) * torch.arange(1, 9).float()
    z = torch.randn(4000)
    pairs = torch.arange(4000).view(2000, 2)
    u = torch.zeros(8)
    u[0] = 1.0
    diffs, dz = x[pairs[:, 0]] - x[pairs[:, 1]], z[pairs[:, 0]] - z[pairs[:, 1]]
    planted = plant(x, z, u, amplitude(diffs, dz, 0.2))
    added = (planted - x)[pairs[:, 0]] - (planted - x)[pairs[:, 1]]
    energy = float(added.pow(2).sum(1).mean())
    assert energy / (energy + float(diffs.pow(2).sum(1).mean())) == pytest.approx(0.2, rel=1e-4)


def test_a_strong_plant_is_found_and_a_faint_one_is_not():
    data, signal, text = _noise(0, SPLITS)
    strong = planted_power("linear", data, signal, text, FIT, PlantedPowerConfig(shares=(0.3,), n_plants=3))
    assert strong["curve"][0]["hits"] == 3 and strong["mde"] == 0.3
    faint = planted_power("linear", data, signal, text, FIT, PlantedPowerConfig(shares=(1e-7,), n_plants=3))
    assert faint["curve"][0]["hits"] == 0 and faint["mde"] is None


def test_the_climb_stops_at_the_first_detected_share_and_the_mde_falls_between():
    data, signal, text = _noise(1, SPLITS)
    out = planted_power("linear", data, signal, text, FIT,
                        PlantedPowerConfig(shares=(1e-6, 1e-4, 1e-2, 0.1, 0.3), n_plants=3))
    rates = [c["detected"] for c in out["curve"]]
    assert rates[-1] >= 0.8 and all(r < 0.8 for r in rates[:-1])  # stopped at the first share detected
    assert 1e-6 < out["mde"] <= 0.3 and out["curve"][-1]["snr"] > out["curve"][0]["snr"]


def test_with_no_signal_the_rule_rarely_says_yes():
    """The false-positive rate at share ~0: 20 noise datasets, one plant each at a vanishing share."""
    cfg = PlantedPowerConfig(shares=(1e-9,), n_plants=1)
    hits = sum(planted_power("linear", *_noise(100 + s, SPLITS), FIT, cfg)["curve"][0]["hits"] for s in range(20))
    assert hits <= 3  # α = 0.05 and the CI above 0.5: 1 expected; more than 3 has probability 0.016


def test_bad_settings_are_one_line():
    with pytest.raises(RsearchError, match="shares: must increase"):
        PlantedPowerConfig(shares=(0.1, 0.01))
    with pytest.raises(RsearchError, match="shares: each must be in"):
        PlantedPowerConfig(shares=(0.0,))


def test_the_sweep_reports_its_best_cells_power_and_can_leave_it_out(tiny_organism, tmp_path):
    from rsearch.jobs.train_probe import TrainProbeConfig, train_probes
    from rsearch.results import SweepResult

    common = dict(model=str(tiny_organism.post_dir), dataset=str(tiny_organism.data_dir), sweep=True, layers=(1, 2),
                  positions=("-1", "user_end"), max_train=200, max_test=60, expected_reward_k=2,
                  expected_reward_max_train=40)
    result = train_probes(TrainProbeConfig(**common, planted_plants=2, out=str(tmp_path / "on")))
    planted = result.baselines["planted"]
    assert SweepResult.load(tmp_path / "on" / "metrics.json").baselines.get("planted")["mde"] == planted["mde"]
    assert (planted["hook"], planted["position"]) == (result.best.hook, result.best.position)
    assert planted["signal"] == "true reward" and planted["n_plants"] == 2  # the organism's truth is known
    last = planted["curve"][-1]
    assert planted["mde"] is None or (planted["mde"] == last["share"] and last["detected"] >= 0.8)
    off = train_probes(TrainProbeConfig(**common, planted_plants=0, out=str(tmp_path / "off")))
    assert "planted" not in off.baselines
