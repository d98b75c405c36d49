"""configs/zephyr.yaml: the real study's recipe, run through the same code path on tiny random-init models and a
local sample in the ultrafeedback_binarized schema (bf16 models, a float16 activation store, no rater).

RSEARCH_TEST_DEVICE=cuda runs the same test on a GPU."""
import json
import os
from pathlib import Path

import pytest

from rsearch.config import load_yaml
from rsearch.jobs.compare import CompareConfig
from rsearch.jobs.demo import DemoConfig, config_from_args, run_demo
from rsearch.jobs.train_probe import TrainProbeConfig

ROOT = Path(__file__).resolve().parents[1]
ZEPHYR = ROOT / "rsearch" / "configs" / "zephyr.yaml"


def test_recipe_names_the_real_subjects():
    raw = load_yaml(ZEPHYR)
    TrainProbeConfig.from_dict(raw["train_probe"], where="train_probe")
    compare = CompareConfig.from_dict(raw["compare"], where="compare")
    args = type("A", (), {"config": str(ZEPHYR), "out": None, "organism_size": None, "seed": None, "device": None,
                          "quiet": True})()
    demo = config_from_args(args)
    for cfg in (compare, demo):
        assert cfg.pre == "HuggingFaceH4/mistral-7b-sft-beta" and cfg.post == "HuggingFaceH4/zephyr-7b-beta"
        assert cfg.dataset == "HuggingFaceH4/ultrafeedback_binarized"
        assert cfg.dtype == "bfloat16" and cfg.device == "cuda" and cfg.beta == 0.1 and cfg.rater == "none"
    assert (demo.train_split, demo.test_split) == ("train_prefs", "test_prefs")
    assert demo.store_dtype == "float16" and max(demo.layers) < 32
    assert set(demo.search_options) == set(demo.strategies)  # the `search:` section: options per strategy


@pytest.fixture(scope="module")
def local_subjects(tmp_path_factory):
    """Tiny random-init Mistral-architecture pre/post models (bf16 on disk) and a local ultrafeedback sample."""

    from tiny import feedback_records, save_perturbed_copy, save_tiny_model, write_jsonl

    root = tmp_path_factory.mktemp("zephyr_local")
    save_tiny_model(root / "pre", "mistral", n_layers=3, d_model=32)
    save_perturbed_copy(root / "pre", root / "post", seed=3)
    (root / "data").mkdir()
    write_jsonl(root / "data" / "train_prefs.jsonl", feedback_records(120, seed=1))
    write_jsonl(root / "data" / "test_prefs.jsonl", feedback_records(40, seed=2))
    (root / "template.yaml").write_text(
        'template: "{lead} {task}"\nslots:\n  lead: ["", "please", "hello"]\n'
        '  task: ["what is two plus three", "list some animals", "repeat after me good nice"]\n')
    return root


def test_recipe_code_path_on_tiny_models(local_subjects, tmp_path):
    raw = load_yaml(ZEPHYR)
    data = dict(raw["demo"])
    data["search_options"] = {k: dict(v) for k, v in raw["search"].items()}
    data["search_options"]["optuna"]["template"] = str(local_subjects / "template.yaml")
    data["search_options"]["gcg"].update(n_tokens=4, search_width=8, topk=8)
    data.update(  # the same recipe, shrunk to the local sample and tiny models, on the CPU
        pre=str(local_subjects / "pre"), post=str(local_subjects / "post"), dataset=str(local_subjects / "data"),
        device=os.environ.get("RSEARCH_TEST_DEVICE", "cpu"), layers=[L for L in data["layers"] if L < 3][-1:], max_train=60, max_test=30, compare_n=12,
        compare_k=2, max_new_tokens=8, sample_batch_size=16, search_budget=8, search_prefixes=["what is"],
        random_prompts=4, n_random=100, n_boot=200, out=str(tmp_path / "zephyr"), progress=False)
    cfg = DemoConfig.from_dict(data, where="demo")
    assert cfg.dtype == "bfloat16" and cfg.store_dtype == "float16"
    report = run_demo(cfg)
    out = Path(cfg.out)
    sweep = json.loads((out / "probes" / "metrics.json").read_text())
    assert {r["layer"] for r in sweep["rows"]} == {2}
    assert {r["position"] for r in sweep["rows"]} == set(cfg.positions)
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert compare["rater"] is None and compare["beta"] == 0.1 and "true_reward" not in compare["metrics"]
    q = {a["id"]: a for a in report["answers"]}
    assert "No rater is known" in q["Q2"]["answer"] and q["Q5"]["verdict"] == "unchecked"
    assert (out / "report.html").stat().st_size > 10_000
