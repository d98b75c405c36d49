"""The direction stage (Q4): per layer, the cosine of the RL update (post − pre activations on the same inputs)
with the reward probe's direction, against activation-shaped random directions and shuffled-label probes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.analysis.direction import capture_both, direction_vs_update, shuffled_probe_directions
from rsearch.jobs.demo_config import DirectionConfig
from rsearch.jobs.demo_plots import plot_direction
from rsearch.lm import ModelCache
from rsearch.log import show_progress
from rsearch.probes import load_probe
from rsearch.report.numbers import ci, fmt, fmt_signed
from rsearch.results import ComparisonResult, DirectionResult, StageResult, SweepResult
from rsearch.study.inputs import compare_rows, probe_training_data
from rsearch.study.stage import Stage, StudyContext, register_stage
from rsearch.subjects import Subjects


def run_direction(cfg: DirectionConfig, seed: int, subjects: Subjects, sweep: SweepResult,
                  compare: ComparisonResult, models: ModelCache, directory: Path) -> DirectionResult:

    table, rows, tok = compare_rows(subjects, models, directory.parent / "compare")
    position = sweep.best["position"]
    probe_paths = {int(r["layer"]): r["path"] for r in sweep.rows if r["position"] == position}
    layers = sorted(probe_paths)
    pre, _ = models.get(subjects.pre)
    post, _ = models.get(subjects.post)
    pre_acts, post_acts = capture_both(pre, post, rows, layers, position, pad_id=tok.pad_token_id,
                                       hook_kind=sweep.hook_kind, batch_size=compare.config["batch_size"],
                                       progress=show_progress())
    probes = {L: load_probe(p)[0] for L, p in probe_paths.items()}
    shuffled = None
    if cfg.n_shuffled:
        train, val, fit, kind = probe_training_data(sweep, models, layers, position)
        seeds = [seed + 1000 + i for i in range(cfg.n_shuffled)]
        shuffled = {L: shuffled_probe_directions(train[L], val[L], fit, seeds, kind) for L in layers}
    got = direction_vs_update(pre_acts, post_acts, probes, position=position, hook_kind=sweep.hook_kind,
                              n_random=cfg.n_random, seed=seed, shuffled=shuffled,
                              written_by=[r["model"] for r in table], groups=[r["prompt_index"] for r in table],
                              n_boot=compare.config["n_boot"])
    got["inputs"] = (f"the comparison's {len(rows)} scored completions (both models'), read by both models (fixed "
                     f"texts); the same completions read by the post-RL model, by which model wrote them (writes)")
    result = DirectionResult.from_dict(got)
    result.save(directory)
    plot_direction(directory / "direction.png", result)
    return result


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


def glance_q4(q: dict) -> tuple[str, str, str]:
    s = q["strongest"]
    shuffled = (f"shuffled-label probes' absolute cos up to {fmt(s['shuffled_abs_cos_family95'])}"
                if s.get("n_shuffled") else "—")
    return (f"cos {fmt_signed(s['cos'])} at layer {fmt(s['layer'])}",
            f"random directions' absolute cos up to {fmt(s['null_abs_cos_family95'])}", shuffled)

def answer_q4(q: dict) -> tuple[str, str]:
    s = q["strongest"]
    sh = (f", shuffled-label probes (n = {fmt(s['n_shuffled'])}) mean |cos| {fmt(s['shuffled_abs_cos_mean'])}, "
          f"corrected quantile {fmt(s['shuffled_abs_cos_family95'])}") if s.get("n_shuffled") else ""
    at = (f"layer {fmt(s['layer'])}: cos {fmt_signed(s['cos'])} against chance |cos| corrected for "
          f"{fmt(q['n_layers'])} layers of {fmt(s['null_abs_cos_family95'])} (activation-shaped random directions "
          f"{fmt(s['cov_abs_cos_family95'])}{sh}; isotropic directions' 95th percentile {fmt(s['isotropic_abs_cos_p95'])}, "
          f"d_model {fmt(s['d_model'])})")
    shift = (f"the probe's score moves by {fmt_signed(s['fixed_std_shift'])} SD on these fixed texts, null directions "
             f"up to {fmt(s['fixed_std_shift_null_family95'])} SD")
    layers = lambda xs: ", ".join(fmt(x) for x in xs)
    head = "On fixed texts (the same inputs through both models: did the parameters change along the probe?): "
    if q["verdict"] == "aligned":
        v = "yes"
        text = (f"Yes: {head}at {fmt(q['n_aligned'])} of {fmt(q['n_layers'])} layers (layers "
                f"{layers(q['aligned_layers'])}) the mean change of the residual stream at `{q['position']}` points "
                f"along the reward probe's direction beyond both nulls; strongest at {at}; {shift}.")
    elif q["verdict"] == "opposed":
        v = "no"
        text = (f"No, the opposite: {head}at layers {layers(q['opposed_layers'])} the update points against the "
                f"probe's direction beyond both nulls; strongest at {at}; {shift}.")
    elif q["verdict"] == "mixed":
        v = "mixed"
        text = (f"Mixed: {head}aligned beyond both nulls at layers {layers(q['aligned_layers'])}, opposed at layers "
                f"{layers(q['opposed_layers'])}; strongest at {at}; {shift}.")
    else:
        v = "no"
        text = (f"No: {head}at no layer is the update's alignment with the probe direction beyond what "
                f"activation-shaped random directions and shuffled-label probes give; strongest at {at}; {shift}.")
    w = q.get("writes_strongest")
    if w is not None:
        wstat = (f"layer {fmt(w['layer'])}: {fmt_signed(w['writes_std_diff'])} SD "
                 f"{ci(w['writes_std_diff_lo'], w['writes_std_diff_hi'], True)} over {fmt(w['writes_n_prompts'])} "
                 f"prompts, null directions up to {fmt(w['writes_null_family95'])} SD")
        if q["writes_verdict"] in ("up", "down"):
            which = q["writes_up_layers"] if q["writes_verdict"] == "up" else q["writes_down_layers"]
            text += (f" What the model writes: the probe reads the post-RL model's own completions "
                     f"{'higher' if q['writes_verdict'] == 'up' else 'lower'} than the pre-RL model's by more than "
                     f"null directions do at layers {layers(which)} (strongest {wstat}).")
        elif q["writes_verdict"] == "mixed":
            text += (f" What the model writes: higher than null directions at layers {layers(q['writes_up_layers'])}, "
                     f"lower at layers {layers(q['writes_down_layers'])} (strongest {wstat}).")
        else:
            text += (f" What the model writes: the probe's difference between the two models' own completions is "
                     f"within what null directions show (strongest {wstat}).")
    text += " (Cosines are computed in raw activation space.)"
    return v, text


def q4_table(q4: dict) -> tuple[list[str], list[list[str]]]:
    return (["layer", "cos(update, probe)", "null |cos|, corrected for layers (activation-shaped / shuffled)",
             "isotropic 95th pct", "fixed texts: probe shift (SD) / null", "writes: probe diff (SD) [95% CI] / null",
             "update norm / activation norm"],
            [[fmt(x["layer"]), fmt_signed(x["cos"]),
              f"{fmt(x['null_abs_cos_family95'])} ({fmt(x['cov_abs_cos_family95'])} / "
              f"{fmt(x.get('shuffled_abs_cos_family95'))})", fmt(x["isotropic_abs_cos_p95"]),
              f"{fmt_signed(x['fixed_std_shift'])} / {fmt(x['fixed_std_shift_null_family95'])}",
              (f"{fmt_signed(x['writes_std_diff'])} {ci(x['writes_std_diff_lo'], x['writes_std_diff_hi'], True)} / "
               f"{fmt(x['writes_null_family95'])}") if "writes_std_diff" in x else "n/a",
              fmt(x["update_rel_norm"])] for x in q4["rows"]])


@register_stage
class DirectionStage(Stage):
    name = "direction"
    reads = ("compare",)
    Result = DirectionResult
    report_id = "Q4"
    question = "Does the RL update move activations along the reward probe's direction?"
    figures = {"direction": "direction/direction.png"}

    def settings(self, ctx: StudyContext):
        return (ctx.cfg.direction,)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> DirectionResult:
        return run_direction(ctx.cfg.direction, ctx.cfg.seed, ctx.subjects, inputs["probes"], inputs["compare"],
                             ctx.models, directory)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return q4_numbers(results["direction"], results["probes"].best["layer"])

    answer = staticmethod(answer_q4)
    glance = staticmethod(glance_q4)
    table = staticmethod(q4_table)
