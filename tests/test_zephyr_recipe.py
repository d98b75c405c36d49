"""configs/zephyr.yaml: the real study's recipe, run through the same code path on tiny random-init models and a
local sample in the ultrafeedback_binarized schema (bf16 models, a float16 activation store, no rater).

RSEARCH_TEST_DEVICE=cuda runs the same test on a GPU."""
import json
import os
from pathlib import Path

import pytest

from rsearch.cli import build_parser
from rsearch.config import config_from_args, load_yaml
from rsearch.jobs.compare import CompareConfig
from rsearch.jobs.demo import run_demo
from rsearch.errors import RsearchError
from rsearch.jobs.demo_config import DemoConfig
from rsearch.jobs.train_probe import TrainProbeConfig

ROOT = Path(__file__).resolve().parents[1]
ZEPHYR = ROOT / "rsearch" / "configs" / "zephyr.yaml"


def test_recipe_names_the_real_subjects(monkeypatch):
    import torch

    raw = load_yaml(ZEPHYR)
    TrainProbeConfig.from_dict(raw["train_probe"], where="train_probe")
    compare = CompareConfig.from_dict(raw["compare"], where="compare")
    # the shipped recipe by name, as `rsearch demo --config zephyr` reads it (a flag overrides the file); the command
    # line checks that the recipe's GPU exists, so without one it is refused in one line, and with one it parses
    args = build_parser("demo").parse_args(["demo", "--config", "zephyr"])
    if not torch.cuda.is_available():
        with pytest.raises(RsearchError, match="no CUDA GPU"):
            config_from_args(args, DemoConfig, "demo")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    demo = config_from_args(build_parser("demo").parse_args(["demo", "--config", "zephyr", "--seed", "3"]),
                            DemoConfig, "demo")
    assert demo.seed == 3
    for cfg in (compare, demo):
        assert cfg.pre == "HuggingFaceH4/mistral-7b-sft-beta" and cfg.post == "HuggingFaceH4/zephyr-7b-beta"
        assert cfg.dataset == "HuggingFaceH4/ultrafeedback_binarized"
        assert cfg.dtype == "bfloat16" and cfg.device == "cuda" and cfg.beta == 0.1 and cfg.rater == "none"
    assert (demo.train_probe.train_split, demo.test_split) == ("train_prefs", "test_prefs")
    assert demo.train_probe.store_dtype == "float16" and max(demo.train_probe.layers) < 32
    assert set(demo.search.options) == set(demo.search.strategies)  # options per strategy


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
    recipe = DemoConfig.from_yaml(ZEPHYR, section="demo")
    options = {k: dict(v) for k, v in recipe.search.options.items()}
    options["optuna"]["template"] = str(local_subjects / "template.yaml")
    options["gcg"].update(n_tokens=4, search_width=8, topk=8)
    cfg = recipe.replace(  # the same recipe, shrunk to the local sample and tiny models, on the CPU
        pre=str(local_subjects / "pre"), post=str(local_subjects / "post"), dataset=str(local_subjects / "data"),
        device=os.environ.get("RSEARCH_TEST_DEVICE", "cpu"), out=str(tmp_path / "zephyr"),
        train_probe={"layers": [L for L in recipe.train_probe.layers if L < 3][-1:], "max_train": 60, "max_test": 30},
        compare={"n": 12, "k": 2, "max_new_tokens": 8, "sample_batch_size": 16, "n_boot": 200},
        search={"budget": 8, "prefixes": ["what is"], "random_prompts": 4, "options": options},
        direction={"n_random": 100},
        causal={"n": 4, "k": 1, "max_new_tokens": 8, "sample_batch_size": 16, "n_random": 1, "fit_pairs": 60,
                "norm_rows": 16, "patch_pairs": 4, "patch_layers": [0, 2], "n_boot": 200})
    assert cfg.dtype == "bfloat16" and cfg.train_probe.store_dtype == "float16"
    report = run_demo(cfg)
    out = Path(cfg.out)
    sweep = json.loads((out / "probes" / "metrics.json").read_text())
    assert {r["layer"] for r in sweep["rows"]} == {2}
    assert {r["position"] for r in sweep["rows"]} == set(cfg.train_probe.positions)
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert compare["rater"] is None and compare["beta"] == 0.1 and "true_reward" not in compare["metrics"]
    q = {a["id"]: a for a in report["answers"]}
    assert "No rater is known" in q["Q2"]["answer"] and q["Q5"]["verdict"] == "unchecked"
    assert q["Q6"]["verdict"] == "unchecked"  # no rater: steering shows the probe's own reading only
    assert (out / "report.html").stat().st_size > 10_000
