"""The probes stage (Q1): the sweep of reward probes over every layer × position, each cell beside the bag of
words, the DPO reward and the log-prob on the same test pairs, and the user_end probe on the expected reward."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rsearch.jobs.train_probe import train_probes
from rsearch.report.numbers import ci, fmt, fmt_p, fmt_signed
from rsearch.report.verdicts import verdict
from rsearch.results import StageResult, SweepResult, selection_score
from rsearch.study.stage import Stage, StudyContext, register_stage

BEST_PROBE = "probes/best_probe.safetensors"  # the best probe's path relative to the run, as later stages' keys name it


ALPHA = 0.05  # McNemar's test: the level at which a probe "beats" a baseline
GRID_KEYS = ("layer", "position", "objective", "embedding", "test_pairwise_acc", "test_pairwise_acc_lo",
             "test_pairwise_acc_hi", "test_truth_acc", "test_minimal_acc", "test_minimal_truth_acc", "test_pearson",
             "test_r", "test_r_lo", "test_r_hi", "test_within_task_r", "val_pairwise_acc", "val_pearson",
             "cv", "cv_lo", "cv_hi", "selected_share", "note", "text_baseline", "text_acc", "probe_minus_text",
             "p_vs_text", "dpo_acc", "p_vs_dpo", "logprob_acc",
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
                and selection_score(g) > float("-inf") and g["test_pairwise_acc"] is not None]
    by_score = sorted(eligible, key=lambda g: -selection_score(g))
    best = next((g for g in grid if g["layer"] == sweep.best["layer"] and g["position"] == sweep.best["position"]),
                None) or (by_score[0] if by_score else {k: sweep.best.get(k) for k in GRID_KEYS})
    pairs = sweep.baselines.get("pairs") or {}
    folds = sweep.config.get("cv_folds") or 0
    q1: dict[str, Any] = {
        "best": best, "n_test_pairs": int(sweep.n_pairs.get("test", 0)), "grid": grid,
        "selection": {"by": (f"{folds}-fold cross-validation over prompts (train + validation)" if folds and
                             best.get("cv") is not None else "validation pairwise accuracy"),
                      "n_cells": len(eligible), "n_embedding_cells": sum(1 for g in grid if g["embedding"])},
        "top": by_score[:3], "baselines": pairs.get("scores", {}), "baseline_labels": pairs.get("labels", {}),
        "truth_known": pairs.get("truth_known", False), "minimal_known": pairs.get("minimal_known", False),
        "alpha": ALPHA, "mde": sweep.baselines.get("planted"), "text_l2": pairs.get("text_l2") or {},
    }
    q1["vs_text"] = versus(best.get("test_pairwise_acc"), best.get("text_acc"), best.get("p_vs_text"))
    q1["vs_dpo"] = versus(best.get("test_pairwise_acc"), best.get("dpo_acc"), best.get("p_vs_dpo"))
    q1["vs_logprob"] = versus(best.get("test_pairwise_acc"), best.get("logprob_acc"), best.get("p_vs_logprob"))
    q1["verdict"] = q1_verdict(best.get("test_pairwise_acc_lo"), best.get("test_pairwise_acc_hi"), q1["vs_text"])

    ue_rows = [g for g in grid if g["position"] == "user_end" and not g["embedding"]
               and selection_score(g) > float("-inf")]
    target = (sweep.baselines.get("user_end") or {})
    if ue_rows and target:
        ue = max(ue_rows, key=selection_score)
        q1["user_end"] = {**ue, "target": target["target"], "k": target["k"], "n_prompts": target["n_prompts"],
                          "reliability": target["reliability"], "prompt_bow": target["prompt_bow"],
                          "task_mean": target["task_mean"], "within_task_prompt_bow": target["within_task_prompt_bow"],
                          "n_cells": len(ue_rows)}
        q1["user_end_verdict"] = verdict(ue["test_r_lo"], ue["test_r_hi"], 0.0)
        q1["user_end_vs_text"] = verdict(ue["r_minus_prompt_bow_lo"], ue["r_minus_prompt_bow_hi"], 0.0)
    else:
        q1["user_end"], q1["user_end_verdict"], q1["user_end_vs_text"] = None, None, None
    return q1


def power_sentence(mde: Mapping[str, Any] | None) -> str:
    """What the verdict could have seen: the planted-signal power of the chosen cell (`rsearch.analysis.
    planted_power`), or nothing where it was not measured."""
    if not mde or not mde.get("curve"):
        return ""
    last = mde["curve"][-1]
    head = (f" Power: a {mde['signal']} direction planted in this cell's activations along random directions, "
            f"refitted and tested by the same rule, ")
    if mde["mde"] is not None:
        return head + (f"beats the bag of words in a share {fmt(last['detected'])} of {fmt(mde['n_plants'])} plants "
                       f"once it carries a share {fmt_p(mde['mde'])} of the variance of chosen − rejected activations (SNR "
                       f"{fmt(last['snr'])} along it): the minimal detectable effect.")
    return head + (f"is found in only a share {fmt(last['detected'])} of {fmt(mde['n_plants'])} plants even at a share "
                   f"{fmt_p(last['share'])} of that variance: the test has little power in this cell, and a No says "
                   f"little.")


def glance_q1(q: dict) -> tuple[str, str, str]:
    """(headline, its strongest null, power) for the report's first screen."""
    b, mde = q["best"], q.get("mde")
    power = ("—" if not mde else f"MDE {fmt_p(mde['mde'])} of chosen − rejected variance (planted)"
             if mde["mde"] is not None else f"no detection up to {fmt_p(mde['max_share'])} of that variance (planted)")
    return (f"probe {fmt(b['test_pairwise_acc'])} {ci(b['test_pairwise_acc_lo'], b['test_pairwise_acc_hi'])}",
            f"bag of words {fmt(b['text_acc'])} (McNemar p {fmt_p(b['p_vs_text'])})", power)

def answer_q1(q: dict) -> tuple[str, str]:
    b, base, labels = q["best"], q["baselines"], q["baseline_labels"]
    where = f"layer {fmt(b['layer'])} at `{b['position']}`"
    acc = f"held-out pairwise accuracy {fmt(b['test_pairwise_acc'])} {ci(b['test_pairwise_acc_lo'], b['test_pairwise_acc_hi'])}"
    text_name = labels.get(b.get("text_baseline") or "", "a bag-of-words text baseline")
    l2 = q.get("text_l2", {}).get(b.get("text_baseline") or "")
    penalty = f" with its ridge penalty chosen on validation (l2 {fmt_p(l2)})" if l2 is not None else ""
    vs_text = (f"a text-only baseline that never sees the model, {text_name} fitted on the same training pairs"
               f"{penalty}, "
               f"ranks the same {fmt(q['n_test_pairs'])} test pairs at {fmt(b['text_acc'])} (McNemar p = "
               f"{fmt_p(b['p_vs_text'])})")
    v = "yes" if q["verdict"] == "beats_text" else "no"
    text = {
        "beats_text": f"Yes, beyond the words. The best probe, {where}, reaches {acc} and beats the bag of words: {vs_text}.",
        "ties_text": (f"No: the best probe, {where}, reaches {acc}, but {vs_text} — no difference the test resolves, so "
                      f"what the probe reads may be written in the words."),
        "below_text": f"No: the best probe, {where}, reaches {acc}, below the bag of words: {vs_text}.",
        "chance": f"No: the best probe, {where}, has {acc}, which does not exclude chance (0.5).",
        "no_text_baseline": (f"No verdict beyond chance: the best probe, {where}, reaches {acc}, but no bag-of-words "
                             f"baseline was measured, so it cannot be told from the words."),
    }[q["verdict"]]
    sel = q["selection"]
    text += (f" It was chosen by {sel['by']} among {fmt(sel['n_cells'])} layer × position cells (the token embeddings, "
             f"layer 0 resid_pre, left out as a bag of words themselves)"
             + (f", with CV accuracy {fmt(b['cv'])} {ci(b['cv_lo'], b['cv_hi'])}; it has the best CV "
                f"score in a share {fmt(b['selected_share'])} of prompt resamples, so the choice is "
                f"{'clear' if b['selected_share'] >= 0.5 else 'uncertain'}" if b.get("cv") is not None
                and b.get("selected_share") is not None else "")
             + "; its test figure is reported once.")
    text += power_sentence(q.get("mde"))
    word = {"above": "above", "below": "below", "tie": "not resolvably different from", None: None}
    if q["vs_dpo"] is not None:
        text += (f" The DPO implicit reward ranks the same pairs at {fmt(b['dpo_acc'])}: the probe is "
                 f"{word[q['vs_dpo']]} it (McNemar p = {fmt_p(b['p_vs_dpo'])}).")
    if q["vs_logprob"] is not None:
        text += (f" The post-RL model's mean log-prob: {fmt(b['logprob_acc'])} (McNemar p = "
                 f"{fmt_p(b['p_vs_logprob'])}).")
    names = [n for n in ("bow_completion", "dpo_reward", "logprob_post") if n in base]
    short = {"bow_completion": "bag of words", "dpo_reward": "DPO reward", "logprob_post": "log-prob"}
    if names and q["truth_known"] and b.get("test_truth_acc") is not None:
        text += (f" Against the truth (the rater's true reward order, {fmt(base[names[0]]['truth_n'])} pairs): probe "
                 f"{fmt(b['test_truth_acc'])}" + "".join(f", {short[n]} {fmt(base[n]['truth_acc'])}" for n in names) + ".")
    if names and q["minimal_known"] and b.get("test_minimal_acc") is not None:
        text += (f" On the {fmt(base[names[0]]['minimal_n'])} minimal pairs (identical but for the answer): probe "
                 f"{fmt(b['test_minimal_acc'])}" + "".join(f", {short[n]} {fmt(base[n]['minimal_acc'])}" for n in names)
                 + ".")
    text += (f" Controls on the same pairs: completion length alone {fmt(b['length_pairwise_acc'])}, the same probe "
             f"trained on shuffled labels {fmt(b['shuffled_pairwise_acc'])}.")
    if q["top"]:
        text += (" Strongest cells by the same rule (their test accuracy; probe − bag of words): " + ", ".join(
            f"layer {fmt(t['layer'])} `{t['position']}` {fmt(t['test_pairwise_acc'])} ({fmt_signed(t['probe_minus_text'])})"
            for t in q["top"]) + ".")
    ue = q["user_end"]
    if ue is not None:
        rel, bow = ue["reliability"], ue["prompt_bow"]
        r = f"r {fmt(ue['test_r'])} {ci(ue['test_r_lo'], ue['test_r_hi'])}"
        head = (f" At the end of the user's prompt, before any answer token, a regression probe (layer {fmt(ue['layer'])}, "
                f"chosen the same way among {fmt(ue['n_cells'])} layers) predicts the expected reward of the policy's "
                f"answer — the {ue['target']} — with {r} over {fmt(ue['n_prompts']['test'])} test prompts")
        text += head + ("." if q["user_end_verdict"] == "above" else ", which does not exclude 0.")
        text += (f" That target's split-half reliability is {fmt(rel['reliability'])}, so no predictor can exceed r "
                 f"{fmt(rel['ceiling'])}; a bag-of-words ridge on the prompt's words reaches r {fmt(bow['r'])} "
                 f"(probe − bag of words {fmt_signed(ue['r_minus_prompt_bow'])} "
                 f"{ci(ue['r_minus_prompt_bow_lo'], ue['r_minus_prompt_bow_hi'], True)}: "
                 + {"above": "the probe is ahead", "below": "the bag of words is ahead",
                    "inconclusive": "no difference the data resolves"}[q["user_end_vs_text"]] + ").")
        if ue.get("task_mean") is not None:
            text += (f" Knowing only the prompt's task gives r {fmt(ue['task_mean']['r'])}; within a task the probe's r is "
                     f"{fmt(ue['test_within_task_r'])} (bag of words {fmt(ue['within_task_prompt_bow'])}).")
    return v, text


def q1_table(q1: dict) -> tuple[list[str], list[list[str]]]:
    """The baselines on the test pairs first, then every cell with its accuracy beside each baseline's (McNemar p
    of the probe against it); user_end cells show r with the expected reward and the prompt's bag of words."""
    head = ["layer", "position", "objective", "test acc [95% CI] (user_end: r)", "vs truth", "minimal pairs",
            "bag of words (p)", "probe − bag of words", "DPO reward (p)", "log-prob (p)", "length acc", "shuffled acc"]
    rows = [["baseline", name_, "—", f"{fmt(s['acc'])} {ci(s['acc_lo'], s['acc_hi'])}", fmt(s["truth_acc"]),
             fmt(s["minimal_acc"]), "—", "—", "—", "—", "—", "—"]
            for name_, s in ((q1["baseline_labels"].get(k, k), v) for k, v in q1["baselines"].items())]
    for g in q1["grid"]:
        where = f"`{g['position']}`" + (" (token embeddings)" if g["embedding"] else "")
        if g["position"] == "user_end":
            r = (g.get("note") or "r n/a") if g["test_r"] is None else \
                f"r {fmt(g['test_r'])} {ci(g['test_r_lo'], g['test_r_hi'])}"
            rows.append([fmt(g["layer"]), where, f"{g['objective']} (expected reward)", r, "—", "—",
                         f"r {fmt(g['prompt_bow_r'])} (prompt)",
                         f"{fmt_signed(g['r_minus_prompt_bow'])} {ci(g['r_minus_prompt_bow_lo'], g['r_minus_prompt_bow_hi'], True)}",
                         "—", "—", "—", "—"])
            continue
        pv = lambda acc, p: "n/a" if acc is None else f"{fmt(acc)} ({fmt_p(p)})"  # noqa: E731
        rows.append([fmt(g["layer"]), where, g["objective"],
                     f"{fmt(g['test_pairwise_acc'])} {ci(g['test_pairwise_acc_lo'], g['test_pairwise_acc_hi'])}",
                     fmt(g["test_truth_acc"]), fmt(g["test_minimal_acc"]), pv(g["text_acc"], g["p_vs_text"]),
                     fmt_signed(g["probe_minus_text"]), pv(g["dpo_acc"], g["p_vs_dpo"]),
                     pv(g["logprob_acc"], g["p_vs_logprob"]), fmt(g["length_pairwise_acc"]),
                     fmt(g["shuffled_pairwise_acc"])])
    return head, rows


@register_stage
class ProbesStage(Stage):
    name = "probes"
    Result = SweepResult
    report_id = "Q1"
    question = ("Does a probe read reward from the model's activations, and where (layer × position, including the "
                "end of the user's prompt)?")
    figures = {"heatmap": "probes/heatmap.png"}

    def settings(self, ctx: StudyContext):
        s = ctx.subjects
        return (ctx.cfg.sweep_config(s.post, s.dataset, "", s.pre, s.rater),)

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> SweepResult:
        s = ctx.subjects
        return train_probes(ctx.cfg.sweep_config(s.post, s.dataset, str(directory), s.pre, s.rater), ctx.models)

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        return q1_numbers(results["probes"])

    answer = staticmethod(answer_q1)
    glance = staticmethod(glance_q1)
    table = staticmethod(q1_table)
