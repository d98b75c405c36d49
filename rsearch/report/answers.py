"""The answers: each research question's wording, chosen by its verdict and stating only numbers formatted from
the report's dict."""
from __future__ import annotations

from rsearch.report.numbers import ci, fmt, fmt_p, fmt_signed

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
