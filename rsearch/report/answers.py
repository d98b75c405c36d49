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
    "Q6": "Does the model use what the probe reads?",
}


def answers(r: dict) -> list[dict[str, str]]:
    out = [{"id": q, "question": QUESTIONS[q], "verdict": v, "answer": text}
           for q, (v, text) in (("Q1", _a1(r["Q1"])), ("Q2", _a2(r["Q2"])), ("Q3", _a3(r["Q3"])),
                                ("Q4", _a4(r["Q4"])), ("Q5", _a5(r["Q5"])))]
    if r.get("Q6"):
        v, text = _a6(r["Q6"])
        out.append({"id": "Q6", "question": QUESTIONS["Q6"], "verdict": v, "answer": text})
    return out


def _a1(q: dict) -> tuple[str, str]:
    b, base, labels = q["best"], q["baselines"], q["baseline_labels"]
    where = f"layer {fmt(b['layer'])} at `{b['position']}`"
    acc = f"held-out pairwise accuracy {fmt(b['test_pairwise_acc'])} {ci(b['test_pairwise_acc_lo'], b['test_pairwise_acc_hi'])}"
    text_name = labels.get(b.get("text_baseline") or "", "a bag-of-words text baseline")
    vs_text = (f"a text-only baseline that never sees the model, {text_name} fitted on the same training pairs, "
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
    text += (f" It was chosen on validation among {fmt(sel['n_cells'])} layer × position cells (the token embeddings, "
             f"layer 0 resid_pre, left out as a bag of words themselves); its test figure is reported once.")
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
        text += (" Strongest cells by validation accuracy (their test accuracy; probe − bag of words): " + ", ".join(
            f"layer {fmt(t['layer'])} `{t['position']}` {fmt(t['test_pairwise_acc'])} ({fmt_signed(t['probe_minus_text'])})"
            for t in q["top"]) + ".")
    ue = q["user_end"]
    if ue is not None:
        rel, bow = ue["reliability"], ue["prompt_bow"]
        r = f"r {fmt(ue['test_r'])} {ci(ue['test_r_lo'], ue['test_r_hi'])}"
        head = (f" At the end of the user's prompt, before any answer token, a regression probe (layer {fmt(ue['layer'])}, "
                f"by validation among {fmt(ue['n_cells'])} layers) predicts the expected reward of the policy's "
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
        if q.get("rater") not in (None, "organism"):
            text += f" Here the \"true reward\" is the rater `{q['rater']}`'s reward, not a known truth."
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
            f"prompts; CIs resample prompts). Completion length alone: {fmt(L['accuracy'])} {ci(L['accuracy_lo'], L['accuracy_hi'])}.")
    if q["reward_probe_acc"] is not None:
        text += (f" For scale, the reward probe's held-out pairwise accuracy is {fmt(q['reward_probe_acc'])} "
                 f"{ci(q['reward_probe_acc_lo'], q['reward_probe_acc_hi'])}.")
    if v == "yes" and L.get("accuracy_lo") is not None and L["accuracy_lo"] >= b["accuracy_lo"]:
        text += " Length alone does about as well: the models may differ mostly in how long they write."
    return v, text


def _a4(q: dict) -> tuple[str, str]:
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


def _a5(q: dict) -> tuple[str, str]:
    organism = q.get("rater") == "organism"
    rater_name = "the true rater" if organism else f"the rater `{q.get('rater')}`"
    parts = []
    for s in q["strategies"]:
        pp = s["probe_vs_prefix"]
        piece = (f"**{s['strategy']}** found prompts the probe scores {fmt(s['mean_probe_score'])} on average "
                 f"({fmt_signed(pp['diff'])} {ci(pp['ci_lo'], pp['ci_hi'], True)} over the bare prefixes, paired), "
                 f"e.g. `{s['example_prompt']}`")
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


def _slope(s: dict) -> str:
    return f"{fmt_signed(s['mean'])} {ci(s['lo'], s['hi'], True)}"


def _a6(q: dict) -> tuple[str, str]:
    sl, ends = q["slopes"], q["ends"]
    setup = (f"Steering the {q['model']}-RL model at `{q['hook']}` (from `{q['positions_from']}` on) with α × the "
             f"probe's unit direction × the typical activation norm there ({fmt(q['scale'])}), α from "
             f"{fmt(q['alphas'][0])} to {fmt(q['alphas'][-1])}, {fmt(q['n_prompts'])} test prompts × {fmt(q['k'])} "
             f"completions per condition, the same seeds in every condition; nulls at the same norms: "
             f"{fmt(q['n_random'])} random directions and a probe fitted on {fmt(q['fit_pairs'])} pairs with shuffled "
             f"labels. Slopes are per unit α, with 95% CIs over prompts.")
    rater = "true reward" if q["rater"] == "organism" else f"reward by `{q['rater']}`"
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
