"""What preference training changed: the post-RL model against the pre-RL model it started from, on held-out data.

    implicit_reward_accuracy: on held-out feedback pairs, the share whose DPO implicit reward margin
        β·[(log π_post(c) − log π_pre(c)) − (log π_post(r) − log π_pre(r))] is positive (a tie counts ½), with a
        bootstrap CI over prompts.
    reward_gain: k answers per held-out prompt sampled from each model with the same seeds (common random numbers),
        rated by a known rater; per prompt the mean of each model, and post − pre with its bootstrap CI over prompts
        (`paired_summary`). With the tasks rater the score's parts too: correctness (0/1, worth CORRECT_POINTS) and
        style, so the gain splits into what was learnt about the answer and about its form.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rsearch.analysis.baselines import logprob_scores
from rsearch.analysis.stats import bootstrap_ci, paired_summary
from rsearch.chat import encode_conversation
from rsearch.lm import sample_completions
from rsearch.tasks.rater import rate_detail


def implicit_reward_accuracy(pre, post, tokenizer, pairs: Sequence, *, beta: float, batch_size: int = 16,
                             seed: int = 0) -> dict[str, Any]:
    """See the module docstring; `pairs` are `rsearch.data.FeedbackPair`s."""
    rows = [encode_conversation(tokenizer, list(p.prompt), text) for p in pairs for text in (p.chosen, p.rejected)]
    reward = logprob_scores(post, rows, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, pre=pre,
                            batch_size=batch_size)["dpo_reward"]
    margin = beta * (reward[0::2] - reward[1::2])         # [n_pairs] chosen − rejected
    right = (margin > 0) + 0.5 * (margin == 0)
    lo, hi = bootstrap_ci(right, seed=seed, clusters=[p.prompt_id for p in pairs])
    return {"n_pairs": len(pairs), "accuracy": float(right.mean()), "ci_lo": lo, "ci_hi": hi,
            "mean_margin": float(margin.mean())}


def _rated(rater_spec: str, rater, prompts: Sequence, texts: Sequence[str]) -> dict[str, list[float]]:
    if rater_spec == "tasks":
        details = [rate_detail(list(p), t) for p, t in zip(prompts, texts, strict=True)]
        return {part: [float(d[part]) for d in details] for part in ("score", "correct", "style")}
    return {"score": [float(s) for s in rater.rate([list(p) for p in prompts], list(texts))]}


def reward_gain(pre, post, tokenizer, prompts: Sequence, rater_spec: str, rater, *, k: int, seed: int,
                max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                batch_size: int = 64, n_boot: int = 2000, progress: bool = False) -> dict[str, Any]:
    """See the module docstring. `prompts` are message lists; `rater` is `load_rater(rater_spec)` (None for tasks).

    Returns:
        {n_prompts, k, parts: {part: paired_summary}, examples: a few prompts with one answer of each model}.
    """
    per_model: dict[str, dict[str, np.ndarray]] = {}
    answers: dict[str, list[str]] = {}
    for name, model in (("pre", pre), ("post", post)):
        got = sample_completions(model, tokenizer, list(prompts), k, seed=seed, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, top_p=top_p, batch_size=batch_size,
                                 progress=progress, desc=f"sample {name}")
        texts = [c.text for comps in got for c in comps]
        rated = _rated(rater_spec, rater, [p for p in prompts for _ in range(k)], texts)
        per_model[name] = {part: np.asarray(v).reshape(len(prompts), k).mean(1) for part, v in rated.items()}
        answers[name] = texts[::k]
    parts = {part: paired_summary(per_model["pre"][part], per_model["post"][part], n_boot=n_boot, seed=seed)
             for part in per_model["pre"]}
    examples = [{"prompt": list(prompts[i])[-1]["content"], "pre": answers["pre"][i], "post": answers["post"][i]}
                for i in range(min(3, len(prompts)))]
    return {"n_prompts": len(prompts), "k": k, "parts": parts, "examples": examples}
