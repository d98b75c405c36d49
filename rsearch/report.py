"""The study's report: report.json (every number), report.md and a self-contained report.html.

`build_report` gathers the stages' outputs into one JSON-able dict and derives, for each research question, a
plain-language answer whose wording depends on the numbers (a verdict by whether a CI excludes chance).
Every number the text states is formatted from a value stored in that dict (`fmt`, `fmt_signed`, `fmt_p`), so
report.md and report.html never say anything report.json does not hold; text from the data (prompts,
completions, paths) appears in code spans. The HTML embeds its figures as base64 PNGs.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from rsearch.io_utils import write_json, write_text

QUESTIONS = {
    "Q1": "Does a probe read reward from the model's activations, and where (layer × position, including the end "
          "of the user's prompt)?",
    "Q2": "Do the post-RL model's completions score higher under the probe than the pre-RL model's, and does the "
          "true reward agree?",
    "Q3": "Can a probe tell which model (pre- or post-RL) wrote a completion?",
    "Q4": "Does the RL update move activations along the reward probe's direction?",
    "Q5": "What did search find, and does the true rater agree it is better than the unsearched prefix and random "
          "prompts?",
}


# ----- number formatting: the only way numbers enter the text -----

def fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    return f"{x:.3f}"


def fmt_signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}"


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}"


def ci(lo: Any, hi: Any, signed: bool = False) -> str:
    f = fmt_signed if signed else fmt
    return f"[{f(lo)}, {f(hi)}]"


def _verdict(lo, hi, ref: float = 0.0) -> str:
    """above / below / overlaps `ref` by the CI."""
    if lo is None or hi is None or lo != lo or hi != hi:
        return "inconclusive"
    if lo > ref:
        return "above"
    if hi < ref:
        return "below"
    return "inconclusive"


# ----- building the report -----

def build_report(*, cfg: dict, subjects: dict, sweep: dict, compare: dict, source: dict, direction: dict,
                 search: dict, out: Path, seconds: float, reused: list[str]) -> dict[str, Any]:
    """One dict with every number, the answers and the figures (paths relative to `out`)."""
    from rsearch.analysis.stats import fisher_ci

    # Q1: the sweep
    rows = sweep["rows"]
    grid = [{"layer": r["layer"], "position": r["position"], "objective": r["objective"],
             "test_pairwise_acc": r.get("test_pairwise_acc"), "test_pairwise_acc_lo": r.get("test_pairwise_acc_lo"),
             "test_pairwise_acc_hi": r.get("test_pairwise_acc_hi"), "test_pearson": r.get("test_pearson"),
             "length_pairwise_acc": r.get("length_pairwise_acc"), "shuffled_pairwise_acc": r.get("shuffled_pairwise_acc")}
            for r in rows]
    best = sweep["best"]
    n_test_pairs = int(sweep.get("n_pairs", {}).get("test", 0))
    from rsearch.jobs.demo import user_end_probe

    ue = user_end_probe(sweep)
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
    q1["verdict"] = _verdict(best.get("test_pairwise_acc_lo"), best.get("test_pairwise_acc_hi"), 0.5)
    q1["user_end_verdict"] = _verdict(ue_lo, ue_hi, 0.0)

    # Q2: the comparison
    m = compare["metrics"]
    q2 = {"n_prompts": compare["n_prompts"], "k": compare["k"], "beta": compare["beta"], "test": compare["test"],
          "metrics": m, "correlations": compare["correlations"], "rater": compare.get("rater"),
          "verdict": _verdict(m["probe_score"]["ci_lo"], m["probe_score"]["ci_hi"]),
          "true_verdict": _verdict(m["true_reward"]["ci_lo"], m["true_reward"]["ci_hi"]) if "true_reward" in m else None,
          "dpo_verdict": _verdict(m["dpo_reward"]["ci_lo"], m["dpo_reward"]["ci_hi"]),
          "length_verdict": _verdict(m["length"]["ci_lo"], m["length"]["ci_hi"])}

    # Q3: the source probe
    sb = source["best"]
    q3 = {"best": {"layer": sb["layer"], "position": sb["position"], **sb["test"]},
          "length_control": source["length_control"], "n": source["n"], "n_prompts": source["n_prompts"],
          "rows": [{"layer": r["layer"], "position": r["position"], **r["test"]} for r in source["rows"]],
          "reward_probe_acc": best.get("test_pairwise_acc"), "reward_probe_acc_lo": best.get("test_pairwise_acc_lo"),
          "reward_probe_acc_hi": best.get("test_pairwise_acc_hi")}
    q3["verdict"] = _verdict(sb["test"]["accuracy_lo"], sb["test"]["accuracy_hi"], 0.5)
    q3["length_verdict"] = _verdict(source["length_control"]["accuracy_lo"], source["length_control"]["accuracy_hi"], 0.5)

    # Q4: direction against update
    drows = direction["rows"]
    # beyond chance = beyond the random |cos| quantile corrected for the number of layers looked at
    aligned = [r["layer"] for r in drows if r["cos"] > r["random_abs_cos_family95"]]
    opposed = [r["layer"] for r in drows if r["cos"] < -r["random_abs_cos_family95"]]
    strongest = max(drows, key=lambda r: abs(r["cos"]) / max(r["random_abs_cos_family95"], 1e-12))
    q4 = {"position": direction["position"], "n_random": direction["n_random"], "rows": drows,
          "aligned_layers": aligned, "opposed_layers": opposed, "n_layers": len(drows), "n_aligned": len(aligned),
          "strongest": strongest, "at_best_layer": next((r for r in drows if r["layer"] == best["layer"]), None)}
    q4["verdict"] = "aligned" if aligned and not opposed else "opposed" if opposed and not aligned else (
        "mixed" if aligned else "chance")

    # Q5: search
    strategies = search["strategies"]
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
            row["verdict_prefix"] = _verdict(s["true_vs_prefix"]["ci_lo"], s["true_vs_prefix"]["ci_hi"])
            row["verdict_random"] = _verdict(s["true_vs_random"]["ci_lo"], s["true_vs_random"]["ci_hi"])
        row["probe_verdict"] = _verdict(s["probe_vs_prefix"]["ci_lo"], s["probe_vs_prefix"]["ci_hi"])
        q5_rows.append(row)
    q5 = {"budget": search["budget"], "prefixes": search["prefixes"], "check_samples": search["check_samples"],
          "probe_layer": search["probe_layer"], "n_prefixes": len(search["prefixes"]),
          "n_random_prompts": len(search["baseline_random"]),
          "baseline_prefix_mean_true_reward": search["baseline_prefix_mean_true_reward"],
          "baseline_random_mean_true_reward": search["baseline_random_mean_true_reward"],
          "baseline_prefix_mean_probe_score": search["baseline_prefix_mean_probe_score"],
          "baseline_random_mean_probe_score": search["baseline_random_mean_probe_score"],
          "strategies": q5_rows, "has_true": has_true}
    if has_true:
        q5["best_strategy"] = max(q5_rows, key=lambda r: r["true_vs_prefix"]["mean_a"])["strategy"]

    figures = {"heatmap": "probes/heatmap.png", "distributions": "compare/distributions.png",
               "probe_vs_truth": "compare/probe_vs_truth.png", "source": "source/source.png",
               "direction": "direction/direction.png", "search": "search/search.png"}
    report = {
        "title": "rsearch: do language models internally model the reward their RL fine-tuning taught them to seek?",
        "seconds": round(seconds, 1), "reused_stages": reused, "config": cfg,
        "subjects": {k: subjects.get(k) for k in ("pre", "post", "dataset", "rater", "beta", "organism",
                                                  "organism_size")},
        "Q1": q1, "Q2": q2, "Q3": q3, "Q4": q4, "Q5": q5,
        "figures": {k: v for k, v in figures.items() if (Path(out) / v).is_file()},
    }
    report["answers"] = answers(report)
    return report


# ----- the answers: wording chosen by the numbers -----

def answers(r: dict) -> list[dict[str, str]]:
    return [{"id": q, "question": QUESTIONS[q], "verdict": v, "answer": text}
            for q, (v, text) in (("Q1", _a1(r["Q1"])), ("Q2", _a2(r["Q2"])), ("Q3", _a3(r["Q3"])),
                                 ("Q4", _a4(r["Q4"])), ("Q5", _a5(r["Q5"])))]


def _a1(q: dict) -> tuple[str, str]:
    b, ue = q["best"], q["user_end"]
    acc = f"held-out pairwise accuracy {fmt(b['test_pairwise_acc'])} {ci(b['test_pairwise_acc_lo'], b['test_pairwise_acc_hi'])}"
    if q["verdict"] == "above":
        head, v = "Yes.", "yes"
        text = (f"{head} The best probe (by validation), layer {fmt(b['layer'])} at `{b['position']}`, ranks the "
                f"rater's chosen completion above the rejected one with {acc}, above chance (0.5)")
    elif q["verdict"] == "below":
        v, text = "no", f"No. The best probe, layer {fmt(b['layer'])} at `{b['position']}`, is below chance: {acc}"
    else:
        v, text = "inconclusive", (f"Inconclusive. The best probe, layer {fmt(b['layer'])} at `{b['position']}`, has "
                                   f"{acc}, which does not exclude chance (0.5)")
    text += (f"; controls on the same {fmt(q['n_test_pairs'])} test pairs: completion length alone "
             f"{fmt(b['length_pairwise_acc'])}, the same probe trained on shuffled labels "
             f"{fmt(b['shuffled_pairwise_acc'])}.")
    if b.get("length_pairwise_acc") is not None and b.get("test_pairwise_acc_lo") is not None \
            and b["length_pairwise_acc"] >= b["test_pairwise_acc_lo"]:
        text += " Length alone does about as well, so the probe may be reading length."
    if q["top"]:
        text += " Strongest cells: " + ", ".join(
            f"layer {fmt(t['layer'])} `{t['position']}` {fmt(t['test_pairwise_acc'])}" for t in q["top"]) + "."
    ue_r = f"Pearson r {fmt(ue['test_pearson'])} {ci(ue['test_pearson_lo'], ue['test_pearson_hi'])}"
    if q["user_end_verdict"] == "above":
        text += (f" At the end of the user's prompt, before any completion token, a regression probe (layer "
                 f"{fmt(ue['layer'])}) already predicts the rating of the answer to come: {ue_r}.")
    else:
        text += (f" At the end of the user's prompt (layer {fmt(ue['layer'])}) the probe's prediction of the rating "
                 f"is not distinguishable from none: {ue_r}.")
    return v, text


def _a2(q: dict) -> tuple[str, str]:
    p, m = q["metrics"]["probe_score"], q["metrics"]
    stat = (f"mean probe score {fmt(p['mean_pre'])} (pre) vs {fmt(p['mean_post'])} (post), paired difference "
            f"{fmt_signed(p['diff'])} {ci(p['ci_lo'], p['ci_hi'], True)}, Wilcoxon p = {fmt_p(p['p_value'])}, over "
            f"{fmt(p['n_prompts'])} prompts × {fmt(q['k'])} completions per model")
    v = {"above": "yes", "below": "no", "inconclusive": "inconclusive"}[q["verdict"]]
    head = {"yes": "Yes: the post-RL completions score higher under the probe",
            "no": "No: the post-RL completions score lower under the probe",
            "inconclusive": "Inconclusive: no difference the data can resolve under the probe"}[v]
    text = f"{head} ({stat})."
    if q["true_verdict"] is not None:
        t = m["true_reward"]
        tstat = (f"{fmt(t['mean_pre'])} → {fmt(t['mean_post'])}, {fmt_signed(t['diff'])} "
                 f"{ci(t['ci_lo'], t['ci_hi'], True)}, p = {fmt_p(t['p_value'])}")
        if q["true_verdict"] == q["verdict"] and q["verdict"] != "inconclusive":
            text += f" The true reward agrees ({tstat})."
        elif q["true_verdict"] == "inconclusive":
            text += f" The true reward shows no resolvable change ({tstat})."
        else:
            text += f" The true reward does not agree ({tstat})."
        c = q["correlations"].get("probe_vs_true_reward")
        if c:
            text += (f" Across completions the probe score tracks the true reward with Pearson r {fmt(c['pearson'])} "
                     f"{ci(c['pearson_lo'], c['pearson_hi'])}.")
    else:
        text += " No rater is known for these models, so the true reward cannot be checked."
    d, L = m["dpo_reward"], m["length"]
    text += (f" DPO implicit reward (β = {fmt(q['beta'])}): {fmt_signed(d['diff'])} {ci(d['ci_lo'], d['ci_hi'], True)}; "
             f"length in tokens: {fmt_signed(L['diff'])} {ci(L['ci_lo'], L['ci_hi'], True)}.")
    cl = q["correlations"].get("probe_vs_length")
    if q["length_verdict"] != "inconclusive" and cl and cl["pearson_lo"] > 0 and q["verdict"] == q["length_verdict"]:
        text += (f" Caution: the post-RL model's length changed in the same direction and the probe score correlates "
                 f"with length (r {fmt(cl['pearson'])}), so part of the difference may be length.")
    return v, text


def _a3(q: dict) -> tuple[str, str]:
    b, L = q["best"], q["length_control"]
    acc = f"held-out accuracy {fmt(b['accuracy'])} {ci(b['accuracy_lo'], b['accuracy_hi'])}"
    auc = f", AUROC {fmt(b['auroc'])}" if b.get("auroc") is not None else ""
    where = f"layer {fmt(b['layer'])} at `{b['position']}`"
    v = {"above": "yes", "below": "no", "inconclusive": "inconclusive"}[q["verdict"]]
    head = {"yes": f"Yes: a linear probe on {where} tells the post-RL model's completions from the pre-RL model's",
            "no": f"No: the source probe ({where}) is below chance",
            "inconclusive": f"Inconclusive: the best source probe ({where}) does not clearly beat chance"}[v]
    text = (f"{head} ({acc}{auc}; {fmt(q['n']['test'])} completions of {fmt(q['n_prompts']['test'])} held-out "
            f"prompts). Completion length alone: {fmt(L['accuracy'])} {ci(L['accuracy_lo'], L['accuracy_hi'])}.")
    if q["reward_probe_acc"] is not None:
        text += (f" For scale, the reward probe's held-out pairwise accuracy is {fmt(q['reward_probe_acc'])} "
                 f"{ci(q['reward_probe_acc_lo'], q['reward_probe_acc_hi'])}.")
    if v == "yes" and L.get("accuracy_lo") is not None and L["accuracy_lo"] >= b["accuracy_lo"]:
        text += " Length alone does about as well: the models may differ mostly in how long they write."
    return v, text


def _a4(q: dict) -> tuple[str, str]:
    s = q["strongest"]
    at = (f"layer {fmt(s['layer'])}: cos {fmt_signed(s['cos'])} against a random-direction 95th percentile of "
          f"|cos| {fmt(s['random_abs_cos_p95'])}, {fmt(s['random_abs_cos_family95'])} corrected for looking at "
          f"{fmt(q['n_layers'])} layers (d_model {fmt(s['d_model'])}, {fmt(q['n_random'])} random directions)")
    shift = (f"the probe reads the update as a score change of {fmt_signed(s['probe_shift'])} "
             f"{ci(s['probe_shift_lo'], s['probe_shift_hi'], True)} on the same inputs")
    layers = lambda xs: ", ".join(fmt(x) for x in xs)
    if q["verdict"] == "aligned":
        v = "yes"
        text = (f"Yes: at {fmt(q['n_aligned'])} of {fmt(q['n_layers'])} layers (layers {layers(q['aligned_layers'])}) "
                f"the mean change of the residual stream at `{q['position']}` from the pre- to the post-RL model "
                f"points along the reward probe's direction more than random directions do; strongest at {at}; {shift}.")
    elif q["verdict"] == "opposed":
        v = "no"
        text = (f"No, the opposite: at layers {layers(q['opposed_layers'])} the update points against the probe's "
                f"direction beyond chance; strongest at {at}; {shift}.")
    elif q["verdict"] == "mixed":
        v = "mixed"
        text = (f"Mixed: aligned beyond chance at layers {layers(q['aligned_layers'])}, opposed at layers "
                f"{layers(q['opposed_layers'])}; strongest at {at}; {shift}.")
    else:
        v = "no"
        text = (f"No: at no layer is the update's alignment with the probe direction beyond what random directions "
                f"give; strongest at {at}; {shift}.")
    text += " (The cosine is computed in raw activation space, where a few large directions can dominate.)"
    return v, text


def _a5(q: dict) -> tuple[str, str]:
    parts = []
    for s in q["strategies"]:
        piece = (f"**{s['strategy']}** found prompts the probe scores {fmt(s['mean_probe_score'])} on average (vs "
                 f"{fmt(q['baseline_prefix_mean_probe_score'])} for the bare prefixes), e.g. `{s['example_prompt']}`")
        if q["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            word = lambda vv: {"above": "better than", "below": "worse than",
                               "inconclusive": "not resolvably different from"}[vv]
            piece += (f"; the post-RL model's answers to them get true reward {fmt(tp['mean_a'])}: "
                      f"{word(s['verdict_prefix'])} the prefixes ({fmt_signed(tp['diff'])} "
                      f"{ci(tp['ci_lo'], tp['ci_hi'], True)}) and {word(s['verdict_random'])} random prompts "
                      f"({fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)})")
        parts.append(piece + ".")
    budget = (f"Each strategy searched {fmt(q['n_prefixes'])} prefix{'es' if q['n_prefixes'] != 1 else ''} with a "
              f"budget of {fmt(q['budget'])} scored prompts each, maximizing the user_end probe "
              f"(layer {fmt(q['probe_layer'])}).")
    if q["has_true"]:
        both = [s["strategy"] for s in q["strategies"] if s["verdict_prefix"] == "above" and s["verdict_random"] == "above"]
        if len(both) == len(q["strategies"]):
            v, head = "yes", "Yes: every strategy found prompts the true rater rates above both baselines."
        elif both:
            v, head = "partly", f"Partly: {', '.join(both)} found prompts the true rater rates above both baselines."
        else:
            v, head = "no", "No strategy found prompts the true rater clearly rates above both baselines."
        base = (f" Baselines: the bare prefixes {fmt(q['baseline_prefix_mean_true_reward'])}, "
                f"{fmt(q['n_random_prompts'])} random test prompts {fmt(q['baseline_random_mean_true_reward'])} "
                f"(true reward of {fmt(q['check_samples'])} post-RL answers per prompt).")
        return v, f"{head} {budget}{base} " + " ".join(parts)
    return "unchecked", f"{budget} No rater is known, so only the probe's view is available. " + " ".join(parts)


# ----- rendering -----

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _tables(r: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    q1, q2, q3, q4, q5 = r["Q1"], r["Q2"], r["Q3"], r["Q4"], r["Q5"]
    t: dict[str, tuple[list[str], list[list[str]]]] = {}
    t["Q1"] = (["layer", "position", "objective", "test pairwise acc [95% CI]", "test Pearson r", "length acc",
                "shuffled acc"],
               [[fmt(g["layer"]), f"`{g['position']}`", g["objective"],
                 f"{fmt(g['test_pairwise_acc'])} {ci(g['test_pairwise_acc_lo'], g['test_pairwise_acc_hi'])}",
                 fmt(g["test_pearson"]), fmt(g["length_pairwise_acc"]), fmt(g["shuffled_pairwise_acc"])]
                for g in q1["grid"]])
    t["Q2"] = (["per completion", "pre", "post", "post − pre [95% CI]", "Wilcoxon p"],
               [[name, fmt(s["mean_pre"]), fmt(s["mean_post"]), f"{fmt_signed(s['diff'])} "
                 f"{ci(s['ci_lo'], s['ci_hi'], True)}", fmt_p(s["p_value"])]
                for name, s in ((n, q2["metrics"].get(n)) for n in ("probe_score", "dpo_reward", "length", "true_reward"))
                if s])
    t["Q3"] = (["layer", "position", "test accuracy [95% CI]", "AUROC"],
               [[fmt(x["layer"]), f"`{x['position']}`", f"{fmt(x['accuracy'])} {ci(x['accuracy_lo'], x['accuracy_hi'])}",
                 fmt(x.get("auroc"))] for x in q3["rows"]])
    t["Q4"] = (["layer", "cos(update, probe)", "random |cos| 95th pct", "same, corrected for layers",
                "probe score shift [95% CI]", "update norm / activation norm"],
               [[fmt(x["layer"]), fmt_signed(x["cos"]), fmt(x["random_abs_cos_p95"]), fmt(x["random_abs_cos_family95"]),
                 f"{fmt_signed(x['probe_shift'])} {ci(x['probe_shift_lo'], x['probe_shift_hi'], True)}",
                 fmt(x["update_rel_norm"])] for x in q4["rows"]])
    head = ["strategy", "mean probe score", "evaluations", "seconds"]
    if q5["has_true"]:
        head += ["true reward", "vs prefix [95% CI]", "vs random prompts [95% CI]"]
    rows = []
    for s in q5["strategies"]:
        row = [s["strategy"], fmt(s["mean_probe_score"]), fmt(s["evaluations"]), fmt(s["seconds"])]
        if q5["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            row += [fmt(tp["mean_a"]), f"{fmt_signed(tp['diff'])} {ci(tp['ci_lo'], tp['ci_hi'], True)}",
                    f"{fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)}"]
        rows.append(row)
    t["Q5"] = (head, rows)
    return t


FIGURES_OF = {"Q1": ["heatmap"], "Q2": ["distributions", "probe_vs_truth"], "Q3": ["source"], "Q4": ["direction"],
              "Q5": ["search"]}


def _subject_line(r: dict) -> str:
    s = r["subjects"]
    who = "the embedded model organism" if s.get("organism") else "the configured models"
    rater = "its known rater" if s.get("rater") else "no known rater"
    return (f"Subjects: {who}, pre-RL `{s['pre']}`, post-RL `{s['post']}`, data `{s['dataset']}`, with {rater}. "
            f"Wall time {fmt(r['seconds'])} s" + (f" (reused stages: {', '.join(r['reused_stages'])})."
                                                   if r["reused_stages"] else "."))


def render_markdown(r: dict) -> str:
    tables = _tables(r)
    lines = [f"# {r['title']}", "", _subject_line(r), "", "## Answers", ""]
    for a in r["answers"]:
        lines += [f"**{a['id']}. {a['question']}**", "", a["answer"], ""]
    for a in r["answers"]:
        lines += [f"## {a['id']}: details", "", _md_table(*tables[a["id"]]), ""]
        for f in FIGURES_OF[a["id"]]:
            if f in r["figures"]:
                lines += [f"![{f}]({r['figures'][f]})", ""]
    lines += ["Statistics: paired over prompts (each model's completions averaged per prompt); CIs are percentile "
              "bootstrap 95% intervals; p-values are two-sided Wilcoxon signed-rank tests (search: Mann–Whitney U). "
              "Every number here is in `report.json`.", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Markdown's `code` and **bold** → HTML, escaping everything else."""
    import re

    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            esc = html.escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc))
    return "".join(out)


def render_html(r: dict, out: Path) -> str:
    tables = _tables(r)
    css = ("body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;line-height:1.45;"
           "color:#222}table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ccc;"
           "padding:.25em .5em;text-align:left}th{background:#f3f3f3}code{background:#f4f4f4;padding:0 .2em}"
           ".answer{border-left:4px solid #4C72B0;padding:.3em .8em;margin:.6em 0;background:#f8f9fc}"
           ".verdict{font-weight:bold;text-transform:uppercase;font-size:.8em;color:#4C72B0}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(r['title'])}</title>"
             f"<style>{css}</style></head><body>", f"<h1>{html.escape(r['title'])}</h1>",
             f"<p>{_inline_html(_subject_line(r))}</p>", "<h2>Answers</h2>"]
    for a in r["answers"]:
        parts.append(f"<div class='answer'><p><b>{a['id']}. {html.escape(a['question'])}</b> "
                     f"<span class='verdict'>{html.escape(a['verdict'])}</span></p><p>{_inline_html(a['answer'])}</p></div>")
    for a in r["answers"]:
        head, rows = tables[a["id"]]
        parts.append(f"<h2>{a['id']}: details</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                                         for row in rows) + "</table>")
        for f in FIGURES_OF[a["id"]]:
            if f in r["figures"]:
                data = base64.b64encode((Path(out) / r["figures"][f]).read_bytes()).decode()
                parts.append(f"<p><img alt='{f}' src='data:image/png;base64,{data}'></p>")
    parts.append("<p><small>Statistics: paired over prompts; CIs are percentile bootstrap 95% intervals; p-values are "
                 "two-sided Wilcoxon signed-rank tests (search: Mann–Whitney U). Every number here is in "
                 "<code>report.json</code>.</small></p></body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, report: dict) -> None:
    """report.json, report.md and report.html under `out`, each written atomically."""
    out = Path(out)
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "report.html", render_html(report, out))
