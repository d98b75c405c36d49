"""`rsearch compare`: sampling, scoring, and statistics that are recomputable from the per-completion table.

`make_subjects` (pre/post models, data, reward probes) is shared with the source-probe and direction tests.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsearch.analysis.stats import bootstrap_ci, paired_summary, paired_test, per_prompt_means, verdict
from rsearch.cli import main
from rsearch.jobs.compare import CompareConfig, CompareRun, run_compare
from rsearch.jobs.compare_table import load_table
from rsearch.results import ComparisonResult



def make_subjects(root: Path | None = None, organism: bool = True) -> dict:
    """{"pre", "post", "data", "probe", "probes" (layer → path), "rater", "beta", "layers"}, all strings.

    With `organism` (the default): the tiny organism's SFT and DPO models, its data and rater, and reward probes
    trained at every layer (completion_mean) on its post-RL model — built once per test session (cached under
    $RSEARCH_HOME). Otherwise tiny random-init models from tiny.py under `root`: "post" is "pre" with its weights
    nudged, feedback records as data, random probes.
    """
    if organism:
        return _organism_subjects()
    return _random_subjects(Path(root))


def _organism_subjects() -> dict:
    from rsearch.jobs.train_probe import TrainProbeConfig, train_probes
    from rsearch.organism import ensure

    org = ensure("tiny", seed=0, progress=False)
    out = _cache_dir(org) / "probes"
    if not (out / "metrics.json").is_file():
        train_probes(TrainProbeConfig(model=str(org.post_dir), dataset=str(org.data_dir), sweep=True,
                                      positions=("completion_mean",), out=str(out), max_train=400, max_test=100))
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    probes = {int(r["layer"]): r["path"] for r in rows}
    return {"pre": str(org.pre_dir), "post": str(org.post_dir), "data": str(org.data_dir),
            "probe": str(out / "best_probe.safetensors"), "probes": probes, "rater": "auto", "beta": None,
            "layers": sorted(probes)}


def _cache_dir(org) -> Path:
    """Where this session's shared test outputs live: keyed by the organism build, so a rebuilt organism
    (another build version) never meets outputs of the old one."""
    import hashlib
    import os

    key = hashlib.sha256(org.card_path.read_bytes()).hexdigest()[:12]
    return Path(os.environ["RSEARCH_HOME"]) / "test_subjects" / key


def compared_on_organism():
    """One comparison on the tiny organism per test session (120 prompts × 3 completions), cached in $RSEARCH_HOME."""
    from rsearch.io_utils import read_jsonl
    from rsearch.organism import ensure

    s = make_subjects()
    out = _cache_dir(ensure("tiny", seed=0, progress=False)) / "compare"
    if not (out / "compare.json").is_file():
        run_compare(CompareConfig(pre=s["pre"], post=s["post"], probe=s["probe"], dataset=s["data"],
                                  prompts="test_prefs", n=120, k=3, max_new_tokens=32, rater=s["rater"],
                                  beta=s["beta"], out=str(out), n_boot=400))
    return CompareRun(ComparisonResult.load(out / "compare.json"), read_jsonl(out / "completions.jsonl"), out)


def _random_subjects(root: Path) -> dict:

    from rsearch.probes import LinearProbe, save_probe
    from tiny import feedback_records, save_perturbed_copy, save_tiny_model, write_jsonl

    save_tiny_model(root / "pre", "llama", n_layers=3, d_model=32)
    gen = save_perturbed_copy(root / "pre", root / "post", seed=1)
    (root / "data").mkdir(exist_ok=True)
    write_jsonl(root / "data" / "train_prefs.jsonl", feedback_records(60, seed=1))
    write_jsonl(root / "data" / "test_prefs.jsonl", feedback_records(40, seed=2))
    probes = {}
    for layer in range(3):
        probe = LinearProbe(32)
        with torch.no_grad():
            probe.weight.copy_(torch.randn(32, generator=gen))
        path = root / f"probe{layer}.safetensors"
        save_probe(path, probe, {"model": str(root / "post"), "hook": f"blocks.{layer}.hook_resid_pre",
                                 "position": "completion_mean", "objective": "pairwise"})
        probes[layer] = str(path)
    return {"pre": str(root / "pre"), "post": str(root / "post"), "data": str(root / "data"),
            "probe": probes[1], "probes": probes, "rater": "organism", "beta": 0.1, "layers": [0, 1, 2]}


@pytest.fixture(scope="module")
def subjects():
    return make_subjects()


@pytest.fixture(scope="module")
def compared():
    return compared_on_organism()


def test_outputs_and_table(compared):
    out = compared.out_dir
    for name in ("compare.json", "completions.jsonl", "completions.csv", "distributions.png", "probe_vs_truth.png"):
        assert (out / name).stat().st_size > 100, name
    summary = json.loads((out / "compare.json").read_text())
    table = load_table(out)
    assert len(table) == 2 * summary["n_prompts"] * 3
    assert {r["model"] for r in table} == {"pre", "post"}
    # same prompts, same sample slots for both models
    key = lambda m: sorted((r["prompt_id"], r["sample"]) for r in table if r["model"] == m)
    assert key("pre") == key("post")
    with open(out / "completions.csv") as f:
        assert len(list(csv.DictReader(f))) == len(table)
    assert set(summary["metrics"]) >= {"probe_score", "dpo_reward", "length", "true_reward"}
    # the organism's models, given by path: its rater and its DPO beta are found from its card
    assert summary["rater"] == "organism" and summary["beta_source"] == "organism card"


def test_statistics_recomputed_from_the_table(compared):
    """Every statistic in compare.json comes from completions.jsonl: recompute it independently."""
    from scipy.stats import wilcoxon

    out = compared.out_dir
    summary = json.loads((out / "compare.json").read_text())
    table = load_table(out)
    for metric, s in summary["metrics"].items():
        by = {}
        for r in table:
            if r[metric] is not None:
                by.setdefault(r["prompt_index"], {}).setdefault(r["model"], []).append(r[metric])
        keys = sorted(k for k, v in by.items() if "pre" in v and "post" in v)
        pre = np.array([np.mean(by[k]["pre"]) for k in keys])
        post = np.array([np.mean(by[k]["post"]) for k in keys])
        d = post - pre
        assert s["n_prompts"] == len(keys)
        assert s["mean_pre"] == pytest.approx(pre.mean(), abs=1e-9)
        assert s["mean_post"] == pytest.approx(post.mean(), abs=1e-9)
        assert s["diff"] == pytest.approx(d.mean(), abs=1e-9)
        lo, hi = bootstrap_ci(d, n_boot=summary['config']['n_boot'], seed=0)
        assert (s["ci_lo"], s["ci_hi"]) == pytest.approx((lo, hi), abs=1e-9)
        assert s["ci_lo"] <= s["diff"] <= s["ci_hi"] or np.allclose(d, d[0])
        nz = np.abs(d[d != 0])
        method = "exact" if nz.size <= 50 and np.unique(nz).size == nz.size else "approx"
        p = wilcoxon(d, zero_method="wilcox", method=method).pvalue if np.any(d != 0) else 1.0
        assert s["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-12)


def test_dpo_reward_and_probe_scores_per_completion(compared, subjects):
    from rsearch.chat import encode_conversation
    from rsearch.models import load_model
    from rsearch.scorer import ProbeScorer

    table = [r for r in compared.table if r["probe_score"] is not None]
    beta = compared.summary.beta
    for r in table:
        assert r["dpo_reward"] == pytest.approx(beta * (r["logp_post"] - r["logp_pre"]), abs=1e-9)
    # teacher-forced log-prob, token by token, for a few rows (completion tokens and the closing eos)
    model, tok = load_model(subjects["post"], device="cpu")
    for r in table[:3]:
        row = encode_conversation(tok, r["prompt"], r["completion"])
        ids = torch.tensor([row.ids])
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        c0, c1 = row.completion
        end = c1 + 1 if row.ids[c1] == tok.eos_token_id else c1
        want = sum(float(logp[t - 1, row.ids[t]]) for t in range(c0, end))
        assert r["logp_post"] == pytest.approx(want, abs=1e-3)
    scorer = ProbeScorer.from_file(subjects["probe"], model=model, tokenizer=tok)
    got = scorer.score_texts([r["prompt"] for r in table[:5]], [r["completion"] for r in table[:5]])
    assert got.tolist() == pytest.approx([r["probe_score"] for r in table[:5]], abs=1e-4)


def test_identical_models_give_identical_completions_and_zero_differences(subjects, tmp_path):
    cfg = CompareConfig(pre=subjects["post"], post=subjects["post"], probe=subjects["probe"], dataset=subjects["data"],
                        n=5, k=2, max_new_tokens=8, rater="none", beta=0.1, out=str(tmp_path / "same"),
                        n_boot=200)
    result = run_compare(cfg)
    pre = {(r["prompt_id"], r["sample"]): r["completion"] for r in result.table if r["model"] == "pre"}
    post = {(r["prompt_id"], r["sample"]): r["completion"] for r in result.table if r["model"] == "post"}
    assert pre == post  # same seeds, same batches: common random numbers
    s = result.summary.metrics
    assert s["dpo_reward"]["diff"] == 0 and s["probe_score"]["diff"] == pytest.approx(0, abs=1e-6)
    assert s["dpo_reward"]["p_value"] == 1.0  # all differences exactly 0 (probe scores differ by float noise)
    assert "true_reward" not in s


def test_stats_helpers():
    rng = np.random.default_rng(0)
    pre = rng.normal(size=60)
    post = pre + 0.5 + 0.1 * rng.normal(size=60)
    s = paired_summary(pre, post, n_boot=500, seed=1)
    assert 0.4 < s["ci_lo"] < s["diff"] < s["ci_hi"] < 0.6 and s["p_value"] < 1e-6
    assert verdict(s["ci_lo"], s["ci_hi"]) == "yes"
    assert verdict(-1, 1) == "inconclusive" and verdict(-2, -1) == "no, the opposite"
    assert paired_test([0, 0, 0]) == (1.0, 1.0)
    rows = [{"prompt_index": i, "model": m, "x": v} for i in range(3) for m, v in (("pre", i), ("post", i + 1))]
    rows.append({"prompt_index": 9, "model": "pre", "x": 5.0})  # no post completion: dropped
    keys, a, b = per_prompt_means(rows, "x")
    assert keys == [0, 1, 2] and (b - a).tolist() == [1, 1, 1]


def test_cluster_bootstrap_resamples_prompts_not_completions():
    """k identical completions per prompt carry one prompt's worth of information: the clustered CI equals the
    bootstrap over the prompts' values (same draws), while treating completions as independent shrinks it ~√k."""
    from rsearch.analysis.stats import correlation

    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=40)
    k = 9
    rows = np.repeat(per_prompt, k)
    prompts = np.repeat(np.arange(40), k).tolist()
    clustered = bootstrap_ci(rows, clusters=prompts, n_boot=1000, seed=3)
    assert clustered == pytest.approx(bootstrap_ci(per_prompt, n_boot=1000, seed=3), abs=1e-12)
    naive = bootstrap_ci(rows, n_boot=1000, seed=3)
    assert (clustered[1] - clustered[0]) > 2.5 * (naive[1] - naive[0])
    # any statistic, e.g. Pearson r over (x, y) rows, resamples whole prompts the same way
    x = np.repeat(rng.normal(size=40), k)
    y = x + np.repeat(rng.normal(size=40), k)
    c_clustered = correlation(x, y, groups=prompts, n_boot=500)
    c_naive = correlation(x, y, n_boot=500)
    assert c_clustered["pearson"] == c_naive["pearson"]
    assert (c_clustered["pearson_hi"] - c_clustered["pearson_lo"]) > 2 * (c_naive["pearson_hi"] - c_naive["pearson_lo"])
    with pytest.raises(ValueError):
        bootstrap_ci(rows, clusters=prompts[:-1])


def test_cli_bad_input_is_one_line(subjects, tmp_path, capsys):
    base = ["compare", "--pre", subjects["pre"], "--post", subjects["post"], "--dataset", subjects["data"],
            "--out", str(tmp_path / "x"), "-n", "3", "-k", "1"]
    assert main(base + ["--probe", str(tmp_path / "missing.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == f"rsearch: error: probe file not found: {tmp_path / 'missing.safetensors'}"
    assert main(base + ["--probe", subjects["probe"], "--prompts", "no_such_split"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x" / "compare.json").exists()


def test_prompts_from_a_text_file(subjects, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("what is 3 plus 5 ?\n\ncompliment my poem .\nname two fruits .\n")
    result = run_compare(CompareConfig(pre=subjects["pre"], post=subjects["post"], probe=subjects["probe"],
                                       prompts=str(prompts), n=10, k=1, max_new_tokens=8, out=str(tmp_path / "o"),
                                       n_boot=100))
    assert sorted({r["prompt"] for r in result.table}) == ["compliment my poem .", "name two fruits .",
                                                           "what is 3 plus 5 ?"]
    assert result.summary.n_completions == {"pre": 3, "post": 3}


def test_pre_and_post_the_same_model_is_told(tmp_path):
    from rsearch.jobs.compare import same_weights

    (tmp_path / "m").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m")
    assert same_weights(str(tmp_path / "m"), str(tmp_path / "link"))
    assert not same_weights(str(tmp_path / "m"), str(tmp_path / "other"))
    assert same_weights("org/model", "org/model") and not same_weights("org/model", "org/model", "v1", "v2")
