"""The card's checks on held-out data: how far DPO moved the true reward and its parts, and how well each
scorer ranks the test pairs (overall and on minimal pairs) against the noise ceiling and a text-only baseline.

Every interval resamples the prompt (the independent unit): a pair is one prompt, and a pre/post reward
difference is a per-prompt mean over its sampled completions.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from rsearch.analysis.stats import bootstrap_ci
from rsearch.organism import rater
from rsearch.organism.tokenizer import render
from rsearch.analysis.text_baseline import TextBaselineConfig, fit_text_baseline
from rsearch.organism.dpo import batched_logps


def bootstrap_diff(pre: np.ndarray, post: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    """Mean of post − pre [n_prompts] per-prompt means, with a bootstrap 95% CI over prompts."""
    d = post - pre  # [n_prompts]
    lo, hi = bootstrap_ci(d, n_boot=n, seed=seed)
    return float(d.mean()), lo, hi


def bootstrap_mean(x: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    """Mean of per-prompt values x [n_prompts] with a bootstrap 95% CI over prompts."""
    return bootstrap_diff(np.zeros_like(x), x, n, seed)


def _r(v: float) -> float:
    return round(float(v), 4)


def reward_parts_gain(prompts: Sequence[str], pre: Sequence[Sequence[str]], post: Sequence[Sequence[str]],
                      n_boot: int, seed: int) -> dict[str, Any]:
    """post − pre per prompt of the true reward and of its parts, with CIs over prompts.

    Parts: score = 2 + correct_points + style_points + penalty_points (rater.score_parts); `correct_rate` is the
    share of right answers.
    """
    keys = ("score", "correct_points", "style_points", "penalty_points", "correct_rate")

    def per_prompt(comps: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {k: [] for k in keys}
        for p, cs in zip(prompts, comps):
            ds = [rater.rate_detail(p, c) for c in cs]
            for k in keys[:-1]:
                out[k].append(float(np.mean([d[k] for d in ds])))
            out["correct_rate"].append(float(np.mean([d["correct"] or 0.0 for d in ds])))
        return {k: np.array(v) for k, v in out.items()}

    a, b = per_prompt(pre), per_prompt(post)
    res: dict[str, Any] = {}
    for k in keys:
        gain, lo, hi = bootstrap_diff(a[k], b[k], n_boot, seed)
        res[k] = {"pre": _r(a[k].mean()), "post": _r(b[k].mean()), "gain": _r(gain), "ci95": [_r(lo), _r(hi)]}
    return res


def pair_accuracy(won: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy over pairs (1 right, 0 wrong, 0.5 tie; one pair per prompt) with a bootstrap 95% CI."""
    if len(won) == 0:
        return {"accuracy": None, "ci95": None, "n": 0}
    m, lo, hi = bootstrap_mean(won.astype(float), n_boot, seed)
    return {"accuracy": _r(m), "ci95": [_r(lo), _r(hi)], "n": int(len(won))}


def wins(chosen: np.ndarray | torch.Tensor, rejected: np.ndarray | torch.Tensor) -> np.ndarray:
    """1 where chosen > rejected, 0.5 on a tie, else 0."""
    c, r = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    return np.where(c > r, 1.0, np.where(c == r, 0.5, 0.0))


def by_pair_type(prefs: Sequence[dict[str, Any]], won: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """pair_accuracy overall and on each pair type."""
    types = np.array([r["pair_type"] for r in prefs])
    out = {"all": pair_accuracy(won, n_boot, seed)}
    for t in ("minimal", "ordinary"):
        out[t] = pair_accuracy(won[types == t], n_boot, seed)
    return out


def by_task(prefs: Sequence[dict[str, Any]], won: np.ndarray, keep: Callable[[dict[str, Any]], bool]
            ) -> dict[str, float]:
    """Mean of won per task over the pairs `keep` selects."""
    out: dict[str, list[float]] = {}
    for r, w in zip(prefs, won):
        if keep(r):
            out.setdefault(r["task"], []).append(float(w))
    return {t: _r(np.mean(v)) for t, v in sorted(out.items())}


# ----- the models on held-out data -----

def pref_ids(tok, prefs: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(prompt ids, chosen response ids, rejected response ids) of preference rows, in the chat template.

    Response ids = conversation minus the prompt and the template's final newline: [response…, </s>].
    """
    prompts = tok([render(r["prompt"]) for r in prefs], add_special_tokens=False)["input_ids"]
    chosen = tok([render(r["prompt"], r["chosen"][1]["content"]) for r in prefs], add_special_tokens=False)["input_ids"]
    rejected = tok([render(r["prompt"], r["rejected"][1]["content"]) for r in prefs], add_special_tokens=False)["input_ids"]
    return (prompts, [c[len(p):-1] for p, c in zip(prompts, chosen)], [r[len(p):-1] for p, r in zip(prompts, rejected)])


def text_rows(tok, prefs: Sequence[dict[str, Any]]) -> tuple[list[tuple[list[int], list[int]]], torch.Tensor]:
    """Rows (prompt ids, completion ids) of every chosen and rejected completion and pairs [m, 2] over them."""
    rows, pairs = [], []
    for r in prefs:
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        for side in ("chosen", "rejected"):
            rows.append((p, tok(r[side][1]["content"], add_special_tokens=False)["input_ids"]))
        pairs.append([len(rows) - 2, len(rows) - 1])
    return rows, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def pair_checks(pre, post, tok, prefs_tr: Sequence[dict[str, Any]], prefs_te: Sequence[dict[str, Any]], beta: float,
                n_boot: int, seed: int) -> dict[str, Any]:
    """How well each scorer ranks the test pairs, overall / minimal / ordinary (one pair per prompt):

    noise_ceiling (the true rater vs the noisy label), dpo_implicit (β·log-ratio margin), logprob_post and
    logprob_pre (mean per-token log-prob of the response), text_baseline (bag of words + bigrams of
    prompt + completion, fitted on train_prefs) and text_baseline_completion (of the completion alone).
    """
    pad = tok.pad_token_id
    p_te, c_te, r_te = pref_ids(tok, prefs_te)
    lp = {m: (batched_logps(model, p_te, c_te, pad), batched_logps(model, p_te, r_te, pad))
          for m, model in (("pre", pre), ("post", post))}
    n_c = torch.tensor([len(c) for c in c_te], dtype=torch.float32)
    n_r = torch.tensor([len(r) for r in r_te], dtype=torch.float32)
    margin = beta * ((lp["post"][0] - lp["pre"][0]) - (lp["post"][1] - lp["pre"][1]))
    won = {
        "noise_ceiling": wins([r["true_score_chosen"] for r in prefs_te], [r["true_score_rejected"] for r in prefs_te]),
        "dpo_implicit": wins(margin.numpy(), np.zeros(len(prefs_te))),
        "logprob_post": wins((lp["post"][0] / n_c).numpy(), (lp["post"][1] / n_r).numpy()),
        "logprob_pre": wins((lp["pre"][0] / n_c).numpy(), (lp["pre"][1] / n_r).numpy()),
    }
    rows_tr, pairs_tr = text_rows(tok, prefs_tr)
    rows_te, pairs_te = text_rows(tok, prefs_te)
    for name, mode in (("text_baseline", "prompt_completion"), ("text_baseline_completion", "completion")):
        s = fit_text_baseline(rows_tr, pairs_tr, TextBaselineConfig(mode=mode, seed=seed)).score(rows_te)
        won[name] = wins(s[pairs_te[:, 0]].numpy(), s[pairs_te[:, 1]].numpy())
    out: dict[str, Any] = {k: by_pair_type(prefs_te, w, n_boot, seed) for k, w in won.items()}
    out["minimal_by_task"] = {k: by_task(prefs_te, won[k], lambda r: r["pair_type"] == "minimal")
                              for k in ("logprob_post", "logprob_pre", "dpo_implicit", "text_baseline")}
    return out
