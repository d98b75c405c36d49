"""The source stage (Q3): a probe that tells which model wrote a completion, across layers, split by prompt."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.analysis.source_probe import source_probe
from rsearch.jobs.demo_config import SourceConfig
from rsearch.jobs.demo_plots import plot_source
from rsearch.lm import ModelCache
from rsearch.log import show_progress
from rsearch.report.numbers import ci, fmt
from rsearch.report.verdicts import verdict
from rsearch.results import ComparisonResult, SourceResult, StageResult, SweepResult
from rsearch.study.inputs import compare_rows
from rsearch.study.stage import Stage, StudyContext, register_stage
from rsearch.subjects import Subjects


def run_source(cfg: SourceConfig, seed: int, subjects: Subjects, sweep: SweepResult, compare: ComparisonResult,
               models: ModelCache, directory: Path) -> SourceResult:

    table, rows, tok = compare_rows(subjects, models, directory.parent / "compare")
    model, _ = models.get(subjects.post)
    got = source_probe(model, tok, rows, [int(r["model"] == "post") for r in table],
                       [r["prompt_index"] for r in table], [r["length"] for r in table], layers=sweep.layers,
                       positions=cfg.positions, hook_kind=sweep.hook_kind, seed=seed,
                       batch_size=compare.config["batch_size"], progress=show_progress())
    got["reader"] = subjects.post
    result = SourceResult.from_dict(got)
    result.save(directory)
    plot_source(directory / "source.png", result)
    return result


def q3_numbers(source: SourceResult, sweep: SweepResult) -> dict[str, Any]:
    """Q3's numbers and verdicts: the source probe's best cell beside the length control and the reward probe."""
    sb, best = source.best, sweep.best
    q3 = {"best": {"layer": sb["layer"], "position": sb["position"], **sb["test"]},
          "length_control": source.length_control, "n": source.n, "n_prompts": source.n_prompts,
          "rows": [{"layer": r["layer"], "position": r["position"], **r["test"]} for r in source.rows],
          "reward_probe_acc": best.get("test_pairwise_acc"), "reward_probe_acc_lo": best.get("test_pairwise_acc_lo"),
          "reward_probe_acc_hi": best.get("test_pairwise_acc_hi")}
    q3["verdict"] = verdict(sb["test"]["accuracy_lo"], sb["test"]["accuracy_hi"], 0.5)
    q3["length_verdict"] = verdict(source.length_control["accuracy_lo"], source.length_control["accuracy_hi"], 0.5)
    return q3


def glance_q3(q: dict) -> tuple[str, str, str]:
    b, L = q["best"], q["length_control"]
    scale = ("—" if q.get("reward_probe_acc") is None
             else f"reward probe {fmt(q['reward_probe_acc'])} (for scale)")
    return (f"source probe {fmt(b['accuracy'])} {ci(b['accuracy_lo'], b['accuracy_hi'])}",
            f"length alone {fmt(L['accuracy'])} {ci(L['accuracy_lo'], L['accuracy_hi'])}", scale)

def answer_q3(q: dict) -> tuple[str, str]:
    b, L = q["best"], q["length_control"]
    acc = f"held-out accuracy {fmt(b['accuracy'])} {ci(b['accuracy_lo'], b['accuracy_hi'])}"
    auc = f", AUROC {fmt(b['auroc'])}" if b.get("auroc") is not None else ""
    where = f"layer {fmt(b['layer'])} at `{b['position']}`"
    v = {"above": "yes", "below": "no", "inconclusive": "inconclusive"}[q["verdict"]]
    head = {"yes": f"Yes: a linear probe on {where} tells the post-RL model's completions from the pre-RL model's",
            "no": f"No: the source probe ({where}) is below chance",
            "inconclusive": f"Inconclusive: the best source probe ({where}) does not clearly beat chance"}[v]
    text = (f"{head} ({acc}{auc}; {fmt(q['n']['test'])} completions of {fmt(q['n_prompts']['test'])} held-out "
            f"prompts; CIs resample prompts). Completion length alone: {fmt(L['accuracy'])} {ci(L['accuracy_lo'], L['accuracy_hi'])}.")
    if q["reward_probe_acc"] is not None:
        text += (f" For scale, the reward probe's held-out pairwise accuracy is {fmt(q['reward_probe_acc'])} "
                 f"{ci(q['reward_probe_acc_lo'], q['reward_probe_acc_hi'])}.")
    if v == "yes" and L.get("accuracy_lo") is not None and L["accuracy_lo"] >= b["accuracy_lo"]:
        text += " Length alone does about as well: the models may differ mostly in how long they write."
    return v, text


def q3_table(q3: dict) -> tuple[list[str], list[list[str]]]:
    return (["layer", "position", "test accuracy [95% CI over prompts]", "AUROC"],
            [[fmt(x["layer"]), f"`{x['position']}`", f"{fmt(x['accuracy'])} {ci(x['accuracy_lo'], x['accuracy_hi'])}",
              fmt(x.get("auroc"))] for x in q3["rows"]])


@register_stage
class SourceStage(Stage):
    name = "source"
    reads = ("compare",)
    Result = SourceResult
    report_id = "Q3"
    question = "Can a probe tell which model (pre- or post-RL) wrote a completion?"
    figures = {"source": "source/source.png"}

    def settings(self, ctx: StudyContext):
        return (ctx.cfg.source,)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> SourceResult:
        return run_source(ctx.cfg.source, ctx.cfg.seed, ctx.subjects, inputs["probes"], inputs["compare"],
                          ctx.models, directory)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return q3_numbers(results["source"], results["probes"])

    answer = staticmethod(answer_q3)
    glance = staticmethod(glance_q3)
    table = staticmethod(q3_table)
