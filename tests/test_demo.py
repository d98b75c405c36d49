"""`rsearch demo` on the tiny organism with small budgets: stages, caching, and a report whose every number is
in its JSON and whose answers follow the numbers."""
import copy
import json
import math
import re

import pytest

from rsearch.analysis.text_baseline import TextBaselineConfig
from rsearch.jobs.demo import STAGES, run_demo
from rsearch.jobs.demo_config import DemoConfig
from rsearch.report.build import answers
from rsearch.report.render import render_markdown

SMALL = {"organism_size": "tiny",
         "train_probe": {"positions": ["user_end", "completion_mean", "-1"], "max_train": 300, "max_test": 80,
                         "expected_reward_k": 4, "expected_reward_max_train": 100},
         "compare": {"n": 16, "k": 2, "max_new_tokens": 24, "n_boot": 200},
         "search": {"budget": 8, "prefixes": ["hey ,"], "check_samples": 2, "random_prompts": 4},
         "direction": {"n_random": 100},
         "causal": {"n": 4, "k": 2, "alphas": [-1.0, 0.0, 1.0], "n_random": 2, "fit_pairs": 100, "norm_rows": 32,
                    "max_new_tokens": 16, "patch_pairs": 8, "n_boot": 200}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig.from_dict({**SMALL, "out": str(out)})
    return cfg, run_demo(cfg)


def _numbers_in_json(obj, acc=None):
    acc = set() if acc is None else acc
    if isinstance(obj, dict):
        for v in obj.values():
            _numbers_in_json(v, acc)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_in_json(v, acc)
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, int):
        acc.add(str(obj))
        acc.add(f"{float(obj):.3f}")
        acc.add(f"{float(obj):+.3f}")
    elif isinstance(obj, float) and math.isfinite(obj):
        acc |= {f"{obj:.3f}", f"{obj:+.3f}", f"{obj:.2g}"}
    return acc


def _numbers_in_text(text):
    text = re.sub(r"`[^`]*`", " ", text)             # prompts, paths and positions quoted from the data
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)  # image links
    text = text.replace("95%", " ").replace("95th", " ")
    # whole numbers only: not inside a word or path, and never a prefix of a longer number
    return re.findall(r"(?<![\w.:/-])[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w/]|\.\d)", text)


def test_stages_outputs_and_report(demo):
    cfg, report = demo
    out = __import__("pathlib").Path(cfg.out)
    for name in ("report.json", "report.md", "report.html", "probes/heatmap.png", "probes/metrics.json",
                 "compare/compare.json", "compare/completions.jsonl", "source/source.json", "direction/direction.json",
                 "search/search.json", "causal/steer.json", "causal/steering.png", "causal/patching.png"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report["figures"]) >= 5
    assert not re.search(r"src=['\"](?!data:)", html)  # self-contained
    assert [a["id"] for a in report["answers"]] == ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"]
    md = (out / "report.md").read_text()
    assert md.index("## At a glance") < md.index("## Answers")  # the first screen: one row per question
    assert all(len(a["glance"]) == 3 and a["glance"][0] != "—" for a in report["answers"])
    mde = report["Q1"]["mde"]  # the best cell's planted-signal power, beside its verdict
    assert mde["hook"] == f"blocks.{report['Q1']['best']['layer']}.hook_resid_pre" and mde["curve"]
    assert ("MDE" if mde["mde"] is not None else "no detection") in report["answers"][0]["glance"][2]
    assert "Power: a " in report["answers"][0]["answer"]
    # the text baselines' penalties are chosen on validation from a grid as wide as they need
    assert set(report["Q1"]["text_l2"]) == {"bow_completion", "bow_prompt_completion"}
    assert all(v in TextBaselineConfig().l2_grid for v in report["Q1"]["text_l2"].values())
    for a in report["answers"]:
        assert a["answer"] in (out / "report.md").read_text()
    # every strategy ran at the same budget and was checked with the true rater
    s = json.loads((out / "search" / "search.json").read_text())
    assert [x["strategy"] for x in s["strategies"]] == list(cfg.search.strategies)
    # the same budget for all (beam may stop a prefix early when it has no new span to propose)
    assert all(e <= cfg.search.budget for x in s["strategies"] for e in x["evaluations"])
    assert all(sum(x["evaluations"]) >= 0.9 * cfg.search.budget * len(s["prefixes"]) for x in s["strategies"])
    assert len(s["prefixes"]) == cfg.search.min_prefixes  # the prompt is the unit: enough prefixes
    assert all("true_vs_prefix" in x and "true_vs_random" in x for x in s["strategies"])
    assert {r["position"] for r in report["Q1"]["grid"]} == {"user_end", "completion_mean", "-1"}


def test_every_number_in_the_report_is_in_its_json(demo):
    cfg, report = demo
    out = __import__("pathlib").Path(cfg.out)
    stored = json.loads((out / "report.json").read_text())
    known = _numbers_in_json(stored)
    md = (out / "report.md").read_text()
    found = _numbers_in_text(md)
    assert len(found) > 50
    missing = [x for x in found if x not in known]
    assert not missing, missing[:10]
    assert render_markdown(stored) == md  # the report is a function of its JSON


def test_answers_follow_the_numbers(demo):
    _, report = demo
    r = copy.deepcopy(report)
    p = r["Q2"]["metrics"]["probe_score"]
    for lo, hi, verdict, start in ((0.1, 0.3, "above", "Yes"), (-0.3, -0.1, "below", "No"),
                                   (-0.1, 0.1, "inconclusive", "Inconclusive")):
        p["ci_lo"], p["ci_hi"] = lo, hi
        r["Q2"]["verdict"] = verdict
        a2 = answers(r)[1]
        assert a2["answer"].startswith(start) and f"[{lo:+.3f}, {hi:+.3f}]" in a2["answer"]


def test_q1_weighs_the_probe_against_the_bag_of_words(demo):
    """Q1's table holds the probe beside the text baseline, the DPO reward and the log-prob per cell; its verdict
    follows the rule (yes only when the probe beats the bag of words); user_end reads the expected reward."""
    from rsearch.record import plain
    from rsearch.study.probes import q1_numbers, q1_table
    from rsearch.results import SweepResult

    cfg, report = demo
    q1 = report["Q1"]
    assert set(q1["baselines"]) == {"bow_completion", "bow_prompt_completion", "dpo_reward", "logprob_post"}
    for g in q1["grid"]:
        if g["position"] != "user_end":
            assert None not in (g["text_acc"], g["p_vs_text"], g["dpo_acc"], g["p_vs_dpo"], g["logprob_acc"])
    assert not q1["best"]["embedding"] and all(not t["embedding"] for t in q1["top"])
    # strongest cells: ranked by validation, not by test
    vals = [t["val_pairwise_acc"] for t in q1["top"]]
    assert vals == sorted(vals, reverse=True)
    head, rows = q1_table(report["Q1"])
    assert {"bag of words (p)", "DPO reward (p)", "log-prob (p)", "probe − bag of words"} <= set(head)
    a1 = report["answers"][0]
    assert "bag of words" in a1["answer"] and a1["verdict"] == ("yes" if q1["verdict"] == "beats_text" else "no")
    assert "expected reward" in a1["answer"] and q1["user_end"]["k"] == cfg.train_probe.expected_reward_k

    # the same sweep with the best cell's numbers set: a tie with the bag of words is a no, beating it a yes
    raw = json.loads((__import__("pathlib").Path(cfg.out) / "probes" / "metrics.json").read_text())
    best = next(r for r in raw["rows"] if r["layer"] == raw["best"]["layer"] and r["position"] == raw["best"]["position"])
    for acc, text_acc, p, word in ((0.80, 0.79, 0.35, "no"), (0.80, 0.70, 0.001, "yes"), (0.70, 0.80, 0.001, "no")):
        best.update(test_pairwise_acc=acc, test_pairwise_acc_lo=acc - 0.05, test_pairwise_acc_hi=acc + 0.05,
                    text_acc=text_acc, p_vs_text=p)
        r = copy.deepcopy(report)
        r["Q1"] = plain(q1_numbers(SweepResult.from_dict(raw)))
        got = answers(r)[0]
        assert got["verdict"] == word and f"{text_acc:.3f}" in got["answer"] and "bag of words" in got["answer"]


def test_second_run_reuses_every_stage(demo, capsys):
    cfg, first = demo
    again = run_demo(cfg)
    assert again["reused_stages"] == list(STAGES)
    assert again["Q2"] == first["Q2"] and again["Q5"]["strategies"] == first["Q5"]["strategies"]
    changed = run_demo(cfg.replace(direction={"n_random": 50}))  # only the direction analysis depends on it
    assert changed["reused_stages"] == ["probes", "compare", "source", "search", "causal"]


def test_demo_config_file_matches_the_defaults():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "rsearch" / "configs" / "demo.yaml"
    assert DemoConfig.from_yaml(path, section="demo") == DemoConfig()


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    from rsearch.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("demo:\n  compare:\n    n: 2\n")
    assert main(["demo", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compare.n" in err[0]
    bad.write_text("demo:\n  compare:\n    n_prompts: 20\n")  # an unknown key: named, with its section
    assert main(["demo", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demo.compare: unknown option 'n_prompts'" in err[0]


def test_a_stage_from_outside_the_package_runs_and_has_its_section(demo):
    """tests/toy.py's stage, named in the config alone: the built-in stages are reused, the toy runs after the
    sweep it reads, and its section is in report.json, report.md and report.html (rendered again from the JSON)."""
    from pathlib import Path

    cfg, _ = demo
    report = run_demo(cfg.replace(stages=("tests.toy:ToyStage",), stage_options={"toy": {"top": 3}}))
    # every built-in stage is reused (direction's settings are the ones the test before last changed)
    assert set(STAGES) - set(report["reused_stages"]) <= {"direction"} and "toy" not in report["reused_stages"]
    toy = json.loads((Path(cfg.out) / "toy" / "toy.json").read_text())
    assert report["Toy"] == {"n_cells": toy["n_cells"], "top_layers": toy["top_layers"]} and len(toy["top_layers"]) == 3
    assert [a["id"] for a in report["answers"]][-1] == "Toy"
    md = (Path(cfg.out) / "report.md").read_text()
    assert "## Toy: details" in md and "| rank | layer |" in md
    assert render_markdown(json.loads((Path(cfg.out) / "report.json").read_text())) == md
    assert "<h2>Toy: details</h2>" in (Path(cfg.out) / "report.html").read_text()
