"""The search stage (Q5): every strategy at the same budget on the same prefixes with the user_end probe as
objective; what each found is checked with the true rater against the unsearched prefix and random prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.jobs.search_check import run_search_check
from rsearch.report.numbers import ci, code, fmt, fmt_p, fmt_signed
from rsearch.report.verdicts import verdict
from rsearch.results import SearchOutcome, StageResult
from rsearch.study.stage import Stage, StudyContext, register_stage


def q5_numbers(search: SearchOutcome) -> dict[str, Any]:
    """Q5's numbers and verdicts: every strategy's found prompts against the prefix and random prompts; the
    prompt (prefix) is the unit."""
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
    return q5


def glance_q5(q: dict) -> tuple[str, str, str]:
    if not q["strategies"]:
        return "—", "—", "—"
    if not q["has_true"]:
        s = max(q["strategies"], key=lambda x: x["probe_vs_prefix"]["diff"])
        pp = s["probe_vs_prefix"]
        return (f"{s['strategy']}: probe {fmt_signed(pp['diff'])} {ci(pp['ci_lo'], pp['ci_hi'], True)} over prefixes",
                "no rater", "—")
    s = max(q["strategies"], key=lambda x: x["true_vs_random"]["diff"])
    tr = s["true_vs_random"]
    return (f"{s['strategy']}: reward {fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)} over random "
            f"prompts", f"random prompts {fmt(q['baseline_random_mean_true_reward'])}",
            f"bare prefixes {fmt(q['baseline_prefix_mean_true_reward'])}")

def answer_q5(q: dict) -> tuple[str, str]:
    organism = q.get("rater") == "organism"
    rater_name = "the true rater" if organism else f"the rater {code(q.get('rater'))}"
    parts = []
    for s in q["strategies"]:
        pp = s["probe_vs_prefix"]
        piece = (f"**{s['strategy']}** found prompts the probe scores {fmt(s['mean_probe_score'])} on average "
                 f"({fmt_signed(pp['diff'])} {ci(pp['ci_lo'], pp['ci_hi'], True)} over the bare prefixes, paired), "
                 f"e.g. {code(s['example_prompt'])}")
        if q["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            word = lambda vv: {"above": "better than", "below": "worse than",
                               "inconclusive": "not resolvably different from"}[vv]
            piece += (f"; the post-RL model's answers to them get reward {fmt(tp['mean_post'])}: "
                      f"{word(s['verdict_prefix'])} their prefixes (paired {fmt_signed(tp['diff'])} "
                      f"{ci(tp['ci_lo'], tp['ci_hi'], True)}, Wilcoxon p = {fmt_p(tp['p_value'])}) and "
                      f"{word(s['verdict_random'])} random prompts ({fmt_signed(tr['diff'])} "
                      f"{ci(tr['ci_lo'], tr['ci_hi'], True)})")
        parts.append(piece + ".")
    budget = (f"Each strategy searched {fmt(q['n_prefixes'])} prefix{'es' if q['n_prefixes'] != 1 else ''} with a "
              f"budget of {fmt(q['budget'])} scored prompts each, maximizing the user_end probe "
              f"(layer {fmt(q['probe_layer'])}); each prefix is one observation (intervals resample prefixes).")
    if q["has_true"]:
        both = [s["strategy"] for s in q["strategies"] if s["verdict_prefix"] == "above" and s["verdict_random"] == "above"]
        if len(both) == len(q["strategies"]):
            v, head = "yes", f"Yes: every strategy found prompts {rater_name} rates above both baselines."
        elif both:
            v, head = "partly", f"Partly: {', '.join(both)} found prompts {rater_name} rates above both baselines."
        else:
            v, head = "no", f"No strategy found prompts {rater_name} clearly rates above both baselines."
        base = (f" Baselines: the bare prefixes {fmt(q['baseline_prefix_mean_true_reward'])}, "
                f"{fmt(q['n_random_prompts'])} random test prompts {fmt(q['baseline_random_mean_true_reward'])} "
                f"(mean reward of {fmt(q['check_samples'])} post-RL answers per prompt).")
        return v, f"{head} {budget}{base} " + " ".join(parts)
    return "unchecked", f"{budget} No rater is known or given, so only the probe's view is available. " + " ".join(parts)


def q5_table(q5: dict) -> tuple[list[str], list[list[str]]]:
    head = ["strategy", "mean probe score", "probe vs prefix, paired [95% CI]", "evaluations", "forward-equivalents",
            "seconds"]
    if q5["has_true"]:
        head += ["reward", "vs prefix, paired [95% CI]", "Wilcoxon p", "vs random prompts [95% CI]",
                 "exploitation gap [95% CI]"]
    rows = []
    for s in q5["strategies"]:
        pp = s["probe_vs_prefix"]
        row = [s["strategy"], fmt(s["mean_probe_score"]), f"{fmt_signed(pp['diff'])} {ci(pp['ci_lo'], pp['ci_hi'], True)}",
               fmt(s["evaluations"]), fmt(s.get("forwards")), fmt(s["seconds"])]
        if q5["has_true"]:
            tp, tr = s["true_vs_prefix"], s["true_vs_random"]
            row += [fmt(tp["mean_post"]), f"{fmt_signed(tp['diff'])} {ci(tp['ci_lo'], tp['ci_hi'], True)}",
                    fmt_p(tp["p_value"]), f"{fmt_signed(tr['diff'])} {ci(tr['ci_lo'], tr['ci_hi'], True)}"]
            gap = s.get("exploitation_gap")
            row.append(f"{fmt_signed(gap['mean'])} {ci(gap['ci_lo'], gap['ci_hi'], True)}" if gap else "n/a")
        rows.append(row)
    return head, rows


@register_stage
class SearchStage(Stage):
    name = "search"
    reads = ("subjects", "probes")
    Result = SearchOutcome
    report_id = "Q5"
    question = ("What did search find, and does the true rater agree it is better than the unsearched prefix and "
                "random prompts?")
    figures = {"search": "search/search.png"}

    def settings(self, ctx: StudyContext):
        return (ctx.cfg.search.resolved(ctx.cfg.compare),)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> SearchOutcome:
        cfg = ctx.cfg
        return run_search_check(cfg.search.resolved(cfg.compare), cfg.seed, cfg.test_split, ctx.subjects,
                                inputs["probes"], ctx.models, directory)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return q5_numbers(results["search"])

    answer = staticmethod(answer_q5)
    glance = staticmethod(glance_q5)
    table = staticmethod(q5_table)
