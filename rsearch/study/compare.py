"""The compare stage (Q2): k completions per prompt from each model, scored by the best probe, the DPO implicit
reward, length and the true rater; paired statistics over prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.jobs.compare import run_compare
from rsearch.report.numbers import ci, code, fmt, fmt_p, fmt_signed
from rsearch.report.verdicts import verdict
from rsearch.results import ComparisonResult, StageResult
from rsearch.study.probes import BEST_PROBE
from rsearch.study.stage import Stage, StudyContext, register_stage


def q2_numbers(compare: ComparisonResult) -> dict[str, Any]:
    """Q2's numbers and verdicts: the comparison's paired statistics over prompts."""
    m = compare.metrics
    return {"n_prompts": compare.n_prompts, "k": compare.k, "beta": compare.beta, "test": compare.test,
            "metrics": m, "correlations": compare.correlations, "rater": compare.rater,
            "verdict": verdict(m["probe_score"]["ci_lo"], m["probe_score"]["ci_hi"]),
            "true_verdict": verdict(m["true_reward"]["ci_lo"], m["true_reward"]["ci_hi"])
            if "true_reward" in m else None,
            # post − pre of β·log(π_post/π_pre) on each model's own samples is β·(KL(post‖pre) + KL(pre‖post)) ≥ 0:
            # positive whenever the models differ, so a sanity check of the pipeline, not evidence
            "dpo_sanity_check": {"passed": verdict(m["dpo_reward"]["ci_lo"], m["dpo_reward"]["ci_hi"]) == "above",
                                 "why": "the DPO implicit reward's post − pre difference is a sum of two KL "
                                        "divergences (positive by construction): a sanity check, not evidence"},
            "length_verdict": verdict(m["length"]["ci_lo"], m["length"]["ci_hi"])}


def glance_q2(q: dict) -> tuple[str, str, str]:
    m = q["metrics"]
    p, L = m["probe_score"], m["length"]
    t = m.get("true_reward") if q.get("true_verdict") is not None else None
    control = (f"true reward {fmt_signed(t['diff'])} {ci(t['ci_lo'], t['ci_hi'], True)}" if t else "no rater") + (
        f"; DPO sanity check {'passed' if q['dpo_sanity_check']['passed'] else 'FAILED'}")
    return (f"probe score post − pre {fmt_signed(p['diff'])} {ci(p['ci_lo'], p['ci_hi'], True)}",
            f"length {fmt_signed(L['diff'])} {ci(L['ci_lo'], L['ci_hi'], True)} tokens", control)

def answer_q2(q: dict) -> tuple[str, str]:
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
        if q.get("rater") not in (None, "organism"):
            text += f" Here the \"true reward\" is the rater {code(q['rater'])}'s reward, not a known truth."
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
        text += " No rater is known or given for these models (`--rater`), so the reward cannot be checked."
    d, L = m["dpo_reward"], m["length"]
    sanity = "passed" if q["dpo_sanity_check"]["passed"] else "FAILED (the pipeline may be broken)"
    text += (f" Length in tokens: {fmt_signed(L['diff'])} {ci(L['ci_lo'], L['ci_hi'], True)}. Sanity check, not "
             f"evidence: the DPO implicit reward (β = {fmt(q['beta'])}) rises by {fmt_signed(d['diff'])} "
             f"{ci(d['ci_lo'], d['ci_hi'], True)}, as it must (its post − pre difference on each model's own samples "
             f"is a sum of two KL divergences): {sanity}.")
    cl = q["correlations"].get("probe_vs_length")
    if q["length_verdict"] != "inconclusive" and cl and cl["pearson_lo"] > 0 and q["verdict"] == q["length_verdict"]:
        text += (f" Caution: the post-RL model's length changed in the same direction and the probe score correlates "
                 f"with length (r {fmt(cl['pearson'])}), so part of the difference may be length.")
    return v, text


def q2_table(q2: dict) -> tuple[list[str], list[list[str]]]:
    names = {"probe_score": "probe_score", "dpo_reward": "dpo_reward (sanity check: positive by construction)",
             "length": "length", "true_reward": "true_reward" if q2.get("rater") in (None, "organism")
             else f"reward by {code(q2['rater'])}"}
    return (["per completion", "pre", "post", "post − pre [95% CI over prompts]", "Wilcoxon p"],
            [[names[name], fmt(s["mean_pre"]), fmt(s["mean_post"]), f"{fmt_signed(s['diff'])} "
              f"{ci(s['ci_lo'], s['ci_hi'], True)}", fmt_p(s["p_value"])]
             for name, s in ((n, q2["metrics"].get(n)) for n in ("probe_score", "true_reward", "length", "dpo_reward"))
             if s])


@register_stage
class CompareStage(Stage):
    name = "compare"
    reads = ("subjects", "probes")
    Result = ComparisonResult
    report_id = "Q2"
    question = ("Do the post-RL model's completions score higher under the probe than the pre-RL model's, and does "
                "the true reward agree?")
    figures = {"distributions": "compare/distributions.png", "probe_vs_truth": "compare/probe_vs_truth.png"}

    def settings(self, ctx: StudyContext):
        return (self._config(ctx, BEST_PROBE, ""),)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> ComparisonResult:
        return run_compare(self._config(ctx, inputs["probes"].best_probe, str(directory)), ctx.models)

    def _config(self, ctx: StudyContext, probe: str, out: str):
        s = ctx.subjects
        return ctx.cfg.compare_config(s.pre, s.post, s.dataset, probe, s.beta, s.rater, out)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return q2_numbers(results["compare"])

    answer = staticmethod(answer_q2)
    glance = staticmethod(glance_q2)
    table = staticmethod(q2_table)
