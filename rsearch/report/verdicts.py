"""The report's numbers and verdicts, derived from the stages' typed results: for each research question the
numbers it rests on and a verdict by whether a CI excludes chance (report.json holds all of it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rsearch.analysis.stats import fisher_ci
from rsearch.analysis.stats import verdict as ci_verdict
from rsearch.report.answers import answers
from rsearch.results import ComparisonResult, DirectionResult, SearchOutcome, SourceResult, SweepResult
from rsearch.subjects import Subjects


def verdict(lo, hi, ref: float = 0.0) -> str:
    """above / below / inconclusive: where the CI [lo, hi] lies against `ref`."""
    if lo is None or hi is None:
        return "inconclusive"
    return ci_verdict(lo - ref, hi - ref, positive="above", negative="below", neither="inconclusive")


def build_report(*, cfg: dict, subjects: Subjects, sweep: SweepResult, compare: ComparisonResult,
                 source: SourceResult, direction: DirectionResult, search: SearchOutcome, out: Path, seconds: float,
                 reused: list[str]) -> dict[str, Any]:
    """One dict with every number, its verdicts, the answers and the figures (paths relative to `out`)."""
    # Q1: the sweep
    rows = sweep.rows
    grid = [{"layer": r["layer"], "position": r["position"], "objective": r["objective"],
             "test_pairwise_acc": r.get("test_pairwise_acc"), "test_pairwise_acc_lo": r.get("test_pairwise_acc_lo"),
             "test_pairwise_acc_hi": r.get("test_pairwise_acc_hi"), "test_pearson": r.get("test_pearson"),
             "length_pairwise_acc": r.get("length_pairwise_acc"), "shuffled_pairwise_acc": r.get("shuffled_pairwise_acc")}
            for r in rows]
    best = sweep.best
    n_test_pairs = int(sweep.n_pairs.get("test", 0))
    ue = sweep.user_end_probe()
    ue_lo, ue_hi = fisher_ci(ue.get("test_pearson") if ue.get("test_pearson") is not None else float("nan"),
                             n_test_pairs)
    ranked = sorted((g for g in grid if g["objective"] == "pairwise" and g["test_pairwise_acc"] is not None),
                    key=lambda g: -g["test_pairwise_acc"])
    q1 = {"best": {k: best.get(k) for k in ("hook", "layer", "position", "objective", "test_pairwise_acc",
                                            "test_pairwise_acc_lo", "test_pairwise_acc_hi", "test_pearson",
                                            "length_pairwise_acc", "shuffled_pairwise_acc", "val_pairwise_acc")},
          "n_test_pairs": n_test_pairs,
          "user_end": {"layer": ue["layer"], "test_pearson": ue.get("test_pearson"), "test_pearson_lo": ue_lo,
                       "test_pearson_hi": ue_hi, "shuffled_pearson": ue.get("shuffled_pearson"),
                       "ci": "Fisher z interval with n = test pairs (chosen and rejected share the prompt's activation)"},
          "top": ranked[:3], "grid": grid}
    q1["verdict"] = verdict(best.get("test_pairwise_acc_lo"), best.get("test_pairwise_acc_hi"), 0.5)
    q1["user_end_verdict"] = verdict(ue_lo, ue_hi, 0.0)

    # Q2: the comparison
    m = compare.metrics
    q2 = {"n_prompts": compare.n_prompts, "k": compare.k, "beta": compare.beta, "test": compare.test,
          "metrics": m, "correlations": compare.correlations, "rater": compare.rater,
          "verdict": verdict(m["probe_score"]["ci_lo"], m["probe_score"]["ci_hi"]),
          "true_verdict": verdict(m["true_reward"]["ci_lo"], m["true_reward"]["ci_hi"]) if "true_reward" in m else None,
          "dpo_verdict": verdict(m["dpo_reward"]["ci_lo"], m["dpo_reward"]["ci_hi"]),
          "length_verdict": verdict(m["length"]["ci_lo"], m["length"]["ci_hi"])}

    # Q3: the source probe
    sb = source.best
    q3 = {"best": {"layer": sb["layer"], "position": sb["position"], **sb["test"]},
          "length_control": source.length_control, "n": source.n, "n_prompts": source.n_prompts,
          "rows": [{"layer": r["layer"], "position": r["position"], **r["test"]} for r in source.rows],
          "reward_probe_acc": best.get("test_pairwise_acc"), "reward_probe_acc_lo": best.get("test_pairwise_acc_lo"),
          "reward_probe_acc_hi": best.get("test_pairwise_acc_hi")}
    q3["verdict"] = verdict(sb["test"]["accuracy_lo"], sb["test"]["accuracy_hi"], 0.5)
    q3["length_verdict"] = verdict(source.length_control["accuracy_lo"], source.length_control["accuracy_hi"], 0.5)

    # Q4: direction against update
    drows = direction.rows
    # beyond chance = beyond the random |cos| quantile corrected for the number of layers looked at
    aligned = [r["layer"] for r in drows if r["cos"] > r["random_abs_cos_family95"]]
    opposed = [r["layer"] for r in drows if r["cos"] < -r["random_abs_cos_family95"]]
    strongest = max(drows, key=lambda r: abs(r["cos"]) / max(r["random_abs_cos_family95"], 1e-12))
    q4 = {"position": direction.position, "n_random": direction.n_random, "rows": drows,
          "aligned_layers": aligned, "opposed_layers": opposed, "n_layers": len(drows), "n_aligned": len(aligned),
          "strongest": strongest, "at_best_layer": next((r for r in drows if r["layer"] == best["layer"]), None)}
    q4["verdict"] = "aligned" if aligned and not opposed else "opposed" if opposed and not aligned else (
        "mixed" if aligned else "chance")

    # Q5: search
    strategies = search.strategies
    has_true = any("true_vs_prefix" in s for s in strategies)
    q5_rows = []
    for s in strategies:
        top = max(s["results"], key=lambda r: r["probe_score"])
        row = {"strategy": s["strategy"], "mean_probe_score": s["mean_probe_score"],
               "probe_vs_prefix": s["probe_vs_prefix"], "evaluations": sum(s["evaluations"]), "seconds": s["seconds"],
               "example_prompt": top["found"], "example_completion": top["example_completion"],
               "example_probe_score": top["probe_score"], "example_true_reward": top["mean_true_reward"]}
        if has_true:
            row["true_vs_prefix"] = s["true_vs_prefix"]
            row["true_vs_random"] = s["true_vs_random"]
            row["verdict_prefix"] = verdict(s["true_vs_prefix"]["ci_lo"], s["true_vs_prefix"]["ci_hi"])
            row["verdict_random"] = verdict(s["true_vs_random"]["ci_lo"], s["true_vs_random"]["ci_hi"])
        row["probe_verdict"] = verdict(s["probe_vs_prefix"]["ci_lo"], s["probe_vs_prefix"]["ci_hi"])
        q5_rows.append(row)
    q5 = {"budget": search.budget, "prefixes": search.prefixes, "check_samples": search.check_samples,
          "probe_layer": search.probe_layer, "n_prefixes": len(search.prefixes),
          "n_random_prompts": len(search.baseline_random),
          "baseline_prefix_mean_true_reward": search.baseline_prefix_mean_true_reward,
          "baseline_random_mean_true_reward": search.baseline_random_mean_true_reward,
          "baseline_prefix_mean_probe_score": search.baseline_prefix_mean_probe_score,
          "baseline_random_mean_probe_score": search.baseline_random_mean_probe_score,
          "strategies": q5_rows, "has_true": has_true}
    if has_true:
        q5["best_strategy"] = max(q5_rows, key=lambda r: r["true_vs_prefix"]["mean_a"])["strategy"]

    figures = {"heatmap": "probes/heatmap.png", "distributions": "compare/distributions.png",
               "probe_vs_truth": "compare/probe_vs_truth.png", "source": "source/source.png",
               "direction": "direction/direction.png", "search": "search/search.png"}
    report = {
        "title": "rsearch: do language models internally model the reward their RL fine-tuning taught them to seek?",
        "seconds": round(seconds, 1), "reused_stages": reused, "config": cfg,
        "subjects": {k: getattr(subjects, k) for k in ("pre", "post", "dataset", "rater", "beta", "organism",
                                                       "organism_size")},
        "Q1": q1, "Q2": q2, "Q3": q3, "Q4": q4, "Q5": q5,
        "figures": {k: v for k, v in figures.items() if (Path(out) / v).is_file()},
    }
    report["answers"] = answers(report)
    return report
