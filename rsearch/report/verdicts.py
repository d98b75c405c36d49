"""The report's numbers and verdicts, derived from the stages' typed results: for each research question the
numbers it rests on and a verdict by whether a CI excludes chance (report.json holds all of it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rsearch.analysis.stats import verdict as ci_verdict
from rsearch.report.answers import answers
from rsearch.results import ComparisonResult, DirectionResult, SearchOutcome, SourceResult, SteerResult, SweepResult
from rsearch.subjects import Subjects


def verdict(lo, hi, ref: float = 0.0) -> str:
    """above / below / inconclusive: where the CI [lo, hi] lies against `ref`."""
    if lo is None or hi is None:
        return "inconclusive"
    return ci_verdict(lo - ref, hi - ref, positive="above", negative="below", neither="inconclusive")


ALPHA = 0.05  # McNemar's test: the level at which a probe "beats" a baseline
GRID_KEYS = ("layer", "position", "objective", "embedding", "test_pairwise_acc", "test_pairwise_acc_lo",
             "test_pairwise_acc_hi", "test_truth_acc", "test_minimal_acc", "test_minimal_truth_acc", "test_pearson",
             "test_r", "test_r_lo", "test_r_hi", "test_within_task_r", "val_pairwise_acc", "val_pearson",
             "text_baseline", "text_acc", "probe_minus_text", "p_vs_text", "dpo_acc", "p_vs_dpo", "logprob_acc",
             "p_vs_logprob", "prompt_bow_r", "r_minus_prompt_bow", "r_minus_prompt_bow_lo", "r_minus_prompt_bow_hi",
             "length_pairwise_acc", "shuffled_pairwise_acc", "shuffled_pearson")


def versus(acc: float | None, other: float | None, p: float | None, alpha: float = ALPHA) -> str | None:
    """A probe against a baseline on the same pairs: "above" (higher accuracy and McNemar p < alpha), "below"
    (lower, p < alpha), "tie" (no difference the test resolves), None (the baseline was not measured)."""
    if acc is None or other is None or p is None:
        return None
    if p < alpha:
        return "above" if acc > other else "below" if acc < other else "tie"
    return "tie"


def q1_verdict(acc_lo: float | None, acc_hi: float | None, vs_text: str | None) -> str:
    """Q1's rule. "beats_text": the probe is above chance and beats the bag-of-words baseline on the same pairs;
    "ties_text" / "below_text": above chance but not beyond the words; "chance": the CI does not exclude 0.5;
    "no_text_baseline": above chance, but no text baseline was measured (never a yes)."""
    if verdict(acc_lo, acc_hi, 0.5) != "above":
        return "chance"
    return {"above": "beats_text", "tie": "ties_text", "below": "below_text", None: "no_text_baseline"}[vs_text]


def q1_numbers(sweep: SweepResult) -> dict[str, Any]:
    """Q1's numbers and verdicts: the grid with each cell's baselines, the best cell and the strongest cells chosen
    on validation (the token embeddings, layer 0 resid_pre, left out), the baselines on the test pairs, and the
    user_end probe against its target's ceiling and the prompt's bag of words."""
    grid = [{k: r.get(k) for k in GRID_KEYS} for r in sweep.rows]
    objective = sweep.config.get("objective", "pairwise")
    eligible = [g for g in grid if g["objective"] == objective and not g["embedding"]
                and g["val_pairwise_acc"] is not None and g["test_pairwise_acc"] is not None]
    by_val = sorted(eligible, key=lambda g: -g["val_pairwise_acc"])
    best = next((g for g in grid if g["layer"] == sweep.best["layer"] and g["position"] == sweep.best["position"]),
                None) or (by_val[0] if by_val else {k: sweep.best.get(k) for k in GRID_KEYS})
    pairs = sweep.baselines.get("pairs") or {}
    q1: dict[str, Any] = {
        "best": best, "n_test_pairs": int(sweep.n_pairs.get("test", 0)), "grid": grid,
        "selection": {"by": "validation pairwise accuracy", "n_cells": len(eligible),
                      "n_embedding_cells": sum(1 for g in grid if g["embedding"])},
        "top": by_val[:3], "baselines": pairs.get("scores", {}), "baseline_labels": pairs.get("labels", {}),
        "truth_known": pairs.get("truth_known", False), "minimal_known": pairs.get("minimal_known", False),
        "alpha": ALPHA,
    }
    q1["vs_text"] = versus(best.get("test_pairwise_acc"), best.get("text_acc"), best.get("p_vs_text"))
    q1["vs_dpo"] = versus(best.get("test_pairwise_acc"), best.get("dpo_acc"), best.get("p_vs_dpo"))
    q1["vs_logprob"] = versus(best.get("test_pairwise_acc"), best.get("logprob_acc"), best.get("p_vs_logprob"))
    q1["verdict"] = q1_verdict(best.get("test_pairwise_acc_lo"), best.get("test_pairwise_acc_hi"), q1["vs_text"])

    ue_rows = [g for g in grid if g["position"] == "user_end" and not g["embedding"] and g["val_pearson"] is not None]
    target = (sweep.baselines.get("user_end") or {})
    if ue_rows and target:
        ue = max(ue_rows, key=lambda g: g["val_pearson"])
        q1["user_end"] = {**ue, "target": target["target"], "k": target["k"], "n_prompts": target["n_prompts"],
                          "reliability": target["reliability"], "prompt_bow": target["prompt_bow"],
                          "task_mean": target["task_mean"], "within_task_prompt_bow": target["within_task_prompt_bow"],
                          "n_cells": len(ue_rows)}
        q1["user_end_verdict"] = verdict(ue["test_r_lo"], ue["test_r_hi"], 0.0)
        q1["user_end_vs_text"] = verdict(ue["r_minus_prompt_bow_lo"], ue["r_minus_prompt_bow_hi"], 0.0)
    else:
        q1["user_end"], q1["user_end_verdict"], q1["user_end_vs_text"] = None, None, None
    return q1


def q4_numbers(direction: DirectionResult, best_layer: int | None = None) -> dict[str, Any]:
    """Q4's numbers and verdicts: (a) on fixed texts, the update's cosine with the probe direction beyond both
    nulls' |cos| quantile corrected for the number of layers; (b) in what the models write, the probe's
    standardized difference beyond the null directions' (same correction)."""
    drows = direction.rows
    aligned = [r["layer"] for r in drows if r["cos"] > r["null_abs_cos_family95"]]
    opposed = [r["layer"] for r in drows if r["cos"] < -r["null_abs_cos_family95"]]
    ratio = lambda r, key, null: (abs(r[key]) / max(r[null], 1e-12)  # noqa: E731
                                  if r[key] == r[key] and r[null] == r[null] else float("-inf"))
    strongest = max(drows, key=lambda r: ratio(r, "cos", "null_abs_cos_family95"))
    writes = [r for r in drows if "writes_std_diff" in r]
    q4 = {"position": direction.position, "n_random": direction.n_random, "n_shuffled": direction.n_shuffled,
          "rows": drows, "aligned_layers": aligned, "opposed_layers": opposed, "n_layers": len(drows),
          "n_aligned": len(aligned), "strongest": strongest,
          "at_best_layer": next((r for r in drows if r["layer"] == best_layer), None),
          "writes_up_layers": [r["layer"] for r in writes if r["writes_std_diff"] > r["writes_null_family95"]],
          "writes_down_layers": [r["layer"] for r in writes if r["writes_std_diff"] < -r["writes_null_family95"]],
          "writes_strongest": max(writes, key=lambda r: ratio(r, "writes_std_diff", "writes_null_family95"))
          if writes else None}
    q4["verdict"] = "aligned" if aligned and not opposed else "opposed" if opposed and not aligned else (
        "mixed" if aligned else "chance")
    up, down = q4["writes_up_layers"], q4["writes_down_layers"]
    q4["writes_verdict"] = None if not writes else "up" if up and not down else "down" if down and not up else (
        "mixed" if up else "chance")
    return q4


def build_report(*, cfg: dict, subjects: Subjects, sweep: SweepResult, compare: ComparisonResult,
                 source: SourceResult, direction: DirectionResult, search: SearchOutcome, out: Path, seconds: float,
                 reused: list[str], causal: SteerResult | None = None) -> dict[str, Any]:
    """One dict with every number, its verdicts, the answers and the figures (paths relative to `out`)."""
    # Q1: the sweep, against its baselines
    q1 = q1_numbers(sweep)
    best = sweep.best

    # Q2: the comparison
    m = compare.metrics
    q2 = {"n_prompts": compare.n_prompts, "k": compare.k, "beta": compare.beta, "test": compare.test,
          "metrics": m, "correlations": compare.correlations, "rater": compare.rater,
          "verdict": verdict(m["probe_score"]["ci_lo"], m["probe_score"]["ci_hi"]),
          "true_verdict": verdict(m["true_reward"]["ci_lo"], m["true_reward"]["ci_hi"]) if "true_reward" in m else None,
          # post − pre of β·log(π_post/π_pre) on each model's own samples is β·(KL(post‖pre) + KL(pre‖post)) ≥ 0:
          # positive whenever the models differ, so a sanity check of the pipeline, not evidence
          "dpo_sanity_check": {"passed": verdict(m["dpo_reward"]["ci_lo"], m["dpo_reward"]["ci_hi"]) == "above",
                               "why": "the DPO implicit reward's post − pre difference is a sum of two KL "
                                      "divergences (positive by construction): a sanity check, not evidence"},
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
    q4 = q4_numbers(direction, best["layer"])

    # Q5: search; the prompt (prefix) is the unit
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
            row["exploitation_gap"] = s.get("exploitation_gap")  # probe's gain over the prefix − the true gain
        row["forwards"] = sum(s.get("forwards") or [])
        row["probe_verdict"] = verdict(s["probe_vs_prefix"]["ci_lo"], s["probe_vs_prefix"]["ci_hi"])
        q5_rows.append(row)
    q5 = {"budget": search.budget, "prefixes": search.prefixes, "check_samples": search.check_samples,
          "probe_layer": search.probe_layer, "n_prefixes": len(search.prefixes), "unit": search.unit,
          "rater": search.rater, "n_random_prompts": len(search.baseline_random),
          "baseline_prefix_mean_true_reward": search.baseline_prefix_mean_true_reward,
          "baseline_random_mean_true_reward": search.baseline_random_mean_true_reward,
          "baseline_prefix_mean_probe_score": search.baseline_prefix_mean_probe_score,
          "baseline_random_mean_probe_score": search.baseline_random_mean_probe_score,
          "strategies": q5_rows, "has_true": has_true}
    if has_true:
        q5["best_strategy"] = max(q5_rows, key=lambda r: r["true_vs_prefix"]["mean_post"])["strategy"]

    figures = {"heatmap": "probes/heatmap.png", "distributions": "compare/distributions.png",
               "probe_vs_truth": "compare/probe_vs_truth.png", "source": "source/source.png",
               "direction": "direction/direction.png", "search": "search/search.png",
               "steering": "causal/steering.png", "patching": "causal/patching.png"}
    report = {
        "title": "rsearch: do language models internally model the reward their RL fine-tuning taught them to seek?",
        "seconds": round(seconds, 1), "reused_stages": reused, "config": cfg,
        "subjects": {k: getattr(subjects, k) for k in ("pre", "post", "dataset", "rater", "beta", "organism",
                                                       "organism_size")},
        "Q1": q1, "Q2": q2, "Q3": q3, "Q4": q4, "Q5": q5,
        "figures": {k: v for k, v in figures.items() if (Path(out) / v).is_file()},
    }
    if causal is not None:
        report["Q6"] = causal_numbers(causal)
    report["answers"] = answers(report)
    return report


# Q6: causal evidence (steering along the probe direction against two nulls; patching between the models)
Q6_METRICS = ("true_reward", "correct", "style_points", "well_formed", "polite", "rude", "probe_score", "fluency",
              "length")


def causal_numbers(causal: SteerResult) -> dict[str, Any]:
    """Q6: per metric the dose–response slope of the probe direction beside each null's, the curves' ends for the
    side effects, and the patching effects per layer. Verdict (true reward): "yes" when the probe direction's
    slope exceeds both nulls' (the CI over prompts of each paired difference above 0), "opposite" when it is
    below both, else "no"; "unchecked" without a rater."""
    from rsearch.analysis.causal import beyond

    model = "post" if "post" in causal.metrics else causal.models[0]
    m = causal.metrics[model]
    slopes = {k: m[k]["slopes"] for k in Q6_METRICS if k in m}
    ends = {}
    for k in ("true_reward", "probe_score", "fluency", "length"):
        if k in m and "probe" in m[k]["curves"]:
            pts = m[k]["curves"]["probe"]
            zero = next((p for p in pts if p["alpha"] == 0), None)
            ends[k] = {"alpha_min": pts[0]["alpha"], "at_min": pts[0]["mean"], "at_zero": zero and zero["mean"],
                       "alpha_max": pts[-1]["alpha"], "at_max": pts[-1]["mean"]}
    vs = {k: {null: beyond(s.get(f"probe_minus_{null}")) for null in ("random", "shuffled")} for k, s in slopes.items()}
    if "true_reward" not in slopes:
        v = "unchecked"
    else:
        both = set(vs["true_reward"].values())
        v = "yes" if both == {"above"} else "opposite" if both == {"below"} else "no"
    q6 = {"model": model, "hook": causal.hook, "positions_from": causal.positions_from, "alphas": causal.alphas,
          "n_prompts": causal.n_prompts, "k": causal.k, "n_random": causal.n_random, "fit_pairs": causal.fit_pairs,
          "scale": causal.scale[model], "rater": causal.rater, "slopes": slopes, "vs_nulls": vs, "ends": ends,
          "verdict": v, "patching": causal.patching,
          "parts_beyond_nulls": [k for k in slopes if k not in ("true_reward", "probe_score", "fluency", "length")
                                 and len(set(vs[k].values())) == 1 and set(vs[k].values()) != {"inconclusive"}]}
    if causal.patching:
        rows = causal.patching["rows"]
        q6["patching_beyond_null"] = [r for r in rows if r["verdict"] != "inconclusive"]
        q6["patching_strongest"] = {d: max((r for r in rows if r["direction"] == d),
                                           key=lambda r: abs(r["delta"]["mean"]))
                                    for d in dict.fromkeys(r["direction"] for r in rows)}
    return q6
