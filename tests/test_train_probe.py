import json
import subprocess
import sys

import pytest

from rsearch.probes import load_probe
from rsearch.cli import main
from rsearch.jobs.train_probe import TrainProbeConfig, train_probes
from tiny import feedback_records, save_tiny_model, write_jsonl


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    root = tmp_path_factory.mktemp("subjects")
    save_tiny_model(root / "model", arch="llama", n_layers=3, d_model=32)
    write_jsonl(root / "fb.jsonl", feedback_records(240))
    return root


def test_sweep_writes_table_heatmap_and_a_probe_that_reads_reward(subjects, tmp_path):
    cfg = TrainProbeConfig(model=str(subjects / "model"), dataset=str(subjects / "fb.jsonl"), sweep=True,
                           positions=("user_end", "completion_mean", "-1"), out=str(tmp_path / "out"),
                           store_dir=str(tmp_path / "store"))
    result = train_probes(cfg)
    assert len(result.rows) == 3 * 3
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000
    table = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(table["rows"]) == 9
    by_pos = {(r.layer, r.position): r for r in result.rows}
    assert all(by_pos[(L, "user_end")].objective == "regression" for L in range(3))
    # the rating depends on words of the completion: the mean over completion tokens reads it, the shuffled control does not
    best_mean = max(by_pos[(L, "completion_mean")].test["pairwise_acc"] for L in range(3))
    assert best_mean > 0.75
    assert abs(by_pos[(2, "completion_mean")].shuffled_control["pairwise_acc"] - 0.5) < 0.2
    probe, meta = load_probe(tmp_path / "out" / "best_probe.safetensors")
    assert meta["hook"] == result.best.hook and meta["position"] == result.best.position
    assert meta["d_model"] == 32 and meta["model"] == str(subjects / "model")
    # the token embeddings (layer 0 resid_pre) are fitted and flagged, never the best probe
    assert [r.embedding for r in result.rows] == [r.layer == 0 for r in result.rows]
    assert not result.best.embedding


def rate_by_words(prompt: str, completion: str) -> float:
    """A rater for the tests (`test_train_probe:rate_by_words`): counts 'good' and 'nice', minus 'bad'."""
    words = completion.split()
    return float(words.count("good") + words.count("nice") - words.count("bad"))


def test_every_cell_has_its_baselines_and_mcnemar(subjects, tmp_path):
    """Text baselines and McNemar's test per cell; the DPO reward of a model against itself is 0 on every pair,
    so it ranks at exactly 0.5; the user_end probe's target is the mean of k rated answers sampled from the model."""
    import json

    from rsearch.data import load_splits
    from rsearch.lm import sample_completions
    from rsearch.models import load_model

    model = str(subjects / "model")
    cfg = TrainProbeConfig(model=model, pre=model, dataset=str(subjects / "fb.jsonl"), sweep=True, layers=(1, 2),
                           positions=("user_end", "completion_mean"), rater="test_train_probe:rate_by_words",
                           expected_reward_k=3, max_new_tokens=6, out=str(tmp_path / "out"),
                           store_dir=str(tmp_path / "store"))
    result = train_probes(cfg)
    pairs = result.baselines["pairs"]
    assert set(pairs["scores"]) == {"bow_completion", "bow_prompt_completion", "dpo_reward", "logprob_post"}
    assert pairs["scores"]["dpo_reward"]["acc"] == 0.5        # every margin is 0: each pair counts half
    # the data's rating rises with 'good'/'nice': the bag of words reads it, and the rater gives the truth
    assert pairs["scores"]["bow_completion"]["acc"] > 0.75 and pairs["truth_known"]
    assert pairs["scores"]["bow_completion"]["truth_acc"] > 0.75
    for r in result.rows:
        if r.position == "user_end":
            assert set(r.vs_baselines) == {"prompt_bow"} and r.objective == "regression"
            continue
        vs = r.vs_baselines
        assert set(vs) == set(pairs["scores"])
        for name, v in vs.items():
            assert 0 < v["p"] <= 1 and v["acc"] == pairs["scores"][name]["acc"]
            assert abs(v["diff"] - (r.test["pairwise_acc"] - v["acc"])) < 1e-12
            assert v["probe_only"] + v["baseline_only"] <= pairs["n"]
    # user_end: one row per prompt, its target the mean of k answers rated by the rater, as sampled again here
    rows = [json.loads(line) for line in (tmp_path / "out" / "user_end_targets.jsonl").read_text().splitlines()]
    test_rows = [x for x in rows if x["split"] == "test"]
    assert all(len(x["values"]) == 3 and abs(x["target"] - sum(x["values"]) / 3) < 1e-9 for x in rows)
    splits = load_splits(cfg.dataset, cfg.train_split, cfg.test_split, cfg.val_fraction, seed=cfg.seed)
    by_id = {p.prompt_id: p for p in splits["test"]}
    lm, tok = load_model(model, "float32", "cpu")
    again = sample_completions(lm, tok, [list(by_id[x["prompt_id"]].prompt) for x in test_rows], 3,
                               seed=cfg.seed * 7 + 2, max_new_tokens=6, batch_size=cfg.sample_batch_size)
    assert [[rate_by_words("", c.text) for c in comps] for comps in again] == [x["values"] for x in test_rows]
    ue = result.baselines["user_end"]
    assert ue["k"] == 3 and ue["n_prompts"]["test"] == len(test_rows) and "3 answers" in ue["target"]
    assert ue["reliability"]["n_prompts"] == len(test_rows)


def test_cli_single_probe_and_bad_input(subjects, tmp_path, capsys):
    args = ["train-probe", "--model", str(subjects / "model"), "--dataset", str(subjects / "fb.jsonl"),
            "--hook", "1.resid_post", "--position", "completion_mean", "--out", str(tmp_path / "one")]
    assert main(args) == 0
    assert (tmp_path / "one" / "best_probe.safetensors").exists()
    assert main(args[:-2] + ["--hook", "blocks.9.hook_resid_pre", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rsearch: error: hook point blocks.9.hook_resid_pre does not exist")
    assert not (tmp_path / "bad" / "best_probe.safetensors").exists()


def test_cli_exit_code_2_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rsearch.cli", "train-probe", "--dataset", str(tmp_path / "x.jsonl"),
                           "--model", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
