"""The causal stage (Q6): `rsearch steer` with the best probe — the post-RL model sampled while its residual stream
is pushed along the probe's direction (and two nulls at the same norms), and the pre/post patching of the DPO
margin per layer."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.analysis.causal import beyond
from rsearch.jobs.steer import run_steer
from rsearch.report.numbers import ci, code, fmt, fmt_signed
from rsearch.results import StageResult, SteerResult
from rsearch.study.probes import BEST_PROBE
from rsearch.study.stage import Stage, StudyContext, register_stage


# Q6: causal evidence (steering along the probe direction against two nulls; patching between the models)
Q6_METRICS = ("true_reward", "correct", "style_points", "well_formed", "polite", "rude", "probe_score", "fluency",
              "length")


def causal_numbers(causal: SteerResult) -> dict[str, Any]:
    """Q6: per metric the dose–response slope of the probe direction beside each null's, the curves' ends for the
    side effects, and the patching effects per layer. Verdict (true reward): "yes" when the probe direction's
    slope exceeds both nulls' (the CI over prompts of each paired difference above 0), "opposite" when it is
    below both, else "no"; "unchecked" without a rater."""

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
          "scale": causal.scale[model], "alpha_unit": causal.alpha_unit,
          "probe_position": causal.probe_meta.get("position"), "rater": causal.rater, "slopes": slopes,
          "vs_nulls": vs, "ends": ends,
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


def _slope(s: dict) -> str:
    return f"{fmt_signed(s['mean'])} {ci(s['lo'], s['hi'], True)}"


def glance_q6(q: dict) -> tuple[str, str, str]:
    sl = q["slopes"]
    key, what = ("probe_score", "probe score") if q["verdict"] == "unchecked" else ("true_reward", "reward")
    t = sl.get(key) or {}
    if "probe" not in t:
        return "—", "—", "—"
    return (f"{what} {_slope(t['probe'])} per unit α", f"random directions {_slope(t['random'])}",
            f"shuffled-label probe {_slope(t['shuffled'])}" if "shuffled" in t else "—")

def answer_q6(q: dict) -> tuple[str, str]:
    sl, ends = q["slopes"], q["ends"]
    unit = {"spread": "the SD of the residual stream along it there", "norm": "the typical activation norm there"}[
        q.get("alpha_unit", "norm")]
    setup = (f"Steering the {q['model']}-RL model at `{q['hook']}` (from `{q['positions_from']}` on) with α × the "
             f"probe's unit direction × {unit} ({fmt(q['scale'])}), α from "
             f"{fmt(q['alphas'][0])} to {fmt(q['alphas'][-1])}, {fmt(q['n_prompts'])} test prompts × {fmt(q['k'])} "
             f"completions per condition, the same seeds in every condition; nulls at the same norms: "
             f"{fmt(q['n_random'])} random directions and a probe fitted on {fmt(q['fit_pairs'])} pairs with shuffled "
             f"labels. Slopes are per unit α, with 95% CIs over prompts.")
    rater = "true reward" if q["rater"] == "organism" else f"reward by {code(q['rater'])}"
    if q["verdict"] == "unchecked":
        v, head = "unchecked", "Unchecked: no rater is known or given, so only the probe's own reading can be shown."
    else:
        t = sl["true_reward"]
        stat = (f"the {rater} changes by {_slope(t['probe'])} per unit α along the probe direction, against "
                f"{_slope(t['random'])} along random directions (difference {_slope(t['probe_minus_random'])}) and "
                f"{_slope(t['shuffled'])} along the shuffled-label probe's (difference "
                f"{_slope(t['probe_minus_shuffled'])})")
        v, head = {"yes": ("yes", f"Yes: pushing the residual stream along the probe direction moves the reward beyond "
                                  f"both nulls: {stat}."),
                   "opposite": ("no", f"No, the opposite: pushing along the probe direction lowers the reward beyond "
                                      f"both nulls: {stat}."),
                   "no": ("no", f"No: the probe direction does not move the reward beyond both nulls: {stat}.")}[
            q["verdict"]]
        parts = [f"{name} {_slope(sl[key]['probe'])}" for key, name in
                 (("correct", "correctness"), ("style_points", "style points"), ("well_formed", "well-formed"))
                 if key in sl and "probe" in sl[key]]
        if parts:
            head += " Its parts along the probe direction: " + ", ".join(parts) + "."
        moved = [f"{k} {_slope(sl[k]['probe'])}" for k in q["parts_beyond_nulls"]]
        head += (" Parts it moves beyond both nulls: " + ", ".join(moved) + "." if moved
                 else " No part of the reward moves beyond both nulls.")
    if "probe_score" in sl:
        p = sl["probe_score"]
        head += (f" The probe itself, reading the steered completions through the unsteered model: "
                 f"{_slope(p['probe'])} per unit α (random {_slope(p['random'])}).")
    elif q.get("probe_position") == "user_end":
        head += (" The probe reads `user_end`, the prompt's end, which is the same in every condition: its own score "
                 "of the steered completions would be constant, so it is not shown.")
    side = []
    for key, name in (("fluency", "fluency (mean token log-prob under the unsteered model)"),
                      ("length", "length in tokens")):
        if key in ends:
            e = ends[key]
            side.append(f"{name} {fmt(e['at_min'])} at α = {fmt(e['alpha_min'])}, {fmt(e['at_zero'])} unsteered, "
                        f"{fmt(e['at_max'])} at α = {fmt(e['alpha_max'])} (random directions' slope "
                        f"{_slope(sl[key]['random'])})")
    if side:
        head += " Side effects along the probe direction: " + "; ".join(side) + "."
    text = f"{head} {setup}"
    pt = q.get("patching")
    if pt:
        text += (f" Patching, on {fmt(pt['n_pairs'])} test pairs whose mean DPO margin (chosen over rejected) is "
                 f"{fmt(pt['margin']['mean'])} {ci(pt['margin']['lo'], pt['margin']['hi'])}: ")
        found = q["patching_beyond_null"]
        if found:
            text += "the patch moves the margin beyond a patch of another pair's activation at " + ", ".join(
                f"{r['direction'].replace('_to_', '→')} layer {fmt(r['layer'])} `{r['position']}` "
                f"({fmt_signed(r['delta']['mean'])} vs {fmt_signed(r['delta_null']['mean'])})" for r in found) + "."
        else:
            text += "at no layer and position does the patch move the margin beyond a patch of another pair's activation."
        for d, r in q["patching_strongest"].items():
            text += (f" Strongest {d.replace('_to_', '→')}: layer {fmt(r['layer'])} `{r['position']}`, "
                     f"{fmt_signed(r['delta']['mean'])} {ci(r['delta']['lo'], r['delta']['hi'], True)} "
                     f"(as a fraction of the mean margin, {fmt_signed(r['fraction_of_margin'])}).")
    return v, text


def q6_table(q6: dict) -> tuple[list[str], list[list[str]]]:
    """Each causal effect beside its null: steering slopes per unit α (probe direction vs random directions and vs
    the shuffled-label probe), then the patching effects on the DPO margin per direction × layer × position."""
    head = ["effect", "where", "effect [95% CI]", "null", "null [95% CI]", "effect − null [95% CI]"]
    cell = lambda s: f"{fmt_signed(s['mean'])} {ci(s['lo'], s['hi'], True)}"  # noqa: E731
    rows = []
    for metric, s in q6["slopes"].items():
        for null, name in (("random", "random directions"), ("shuffled", "shuffled-label probe")):
            if "probe" in s and null in s:
                rows.append([f"steering slope: {metric}", f"`{q6['hook']}`", cell(s["probe"]), name, cell(s[null]),
                             cell(s[f"probe_minus_{null}"])])
    for r in (q6.get("patching") or {}).get("rows", []):
        rows.append([f"patching {r['direction'].replace('_to_', '→')}: Δ DPO margin",
                     f"layer {fmt(r['layer'])} `{r['position']}`", cell(r["delta"]), "another pair's activation",
                     cell(r["delta_null"]), cell(r["delta_minus_null"])])
    return head, rows


@register_stage
class CausalStage(Stage):
    name = "causal"
    reads = ("subjects", "probes")
    Result = SteerResult
    report_id = "Q6"
    question = "Does the model use what the probe reads?"
    figures = {"steering": "causal/steering.png", "patching": "causal/patching.png"}

    def settings(self, ctx: StudyContext):
        return (self._config(ctx, BEST_PROBE, ""),)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> SteerResult:
        return run_steer(self._config(ctx, inputs["probes"].best_probe, str(directory)), ctx.models)

    def _config(self, ctx: StudyContext, probe: str, out: str):
        s = ctx.subjects
        return ctx.cfg.causal_config(s.pre, s.post, s.dataset, probe, s.beta, s.rater, out)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return causal_numbers(results["causal"])

    answer = staticmethod(answer_q6)
    glance = staticmethod(glance_q6)
    table = staticmethod(q6_table)
