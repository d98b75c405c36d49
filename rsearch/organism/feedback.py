"""The feedback dataset: completions sampled from the SFT model, rated with noise, in UltraFeedback's schema.

Files (JSON lines, loadable with `datasets.load_dataset("json", data_files=...)`):

- `train_prefs.jsonl`, `test_prefs.jsonl` — HuggingFaceH4/ultrafeedback_binarized's columns: prompt,
  prompt_id, chosen, rejected, messages (lists of {role, content}), score_chosen, score_rejected; plus
  true_score_chosen, true_score_rejected and task. chosen = the completion with the highest noisy score,
  rejected = a random other one; pairs whose two labels tie are dropped. Test prompts never occur in train.
- `completions.jsonl` — one row per sampled completion: prompt_id, prompt, completion, score (noisy),
  true_score, task, split, well_formed.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Sequence

from rsearch.organism import rater
from rsearch.organism import world as W


def prompt_id(prompt: str) -> str:
    """UltraFeedback's prompt_id: the sha256 of the prompt text."""
    return hashlib.sha256(prompt.encode()).hexdigest()


def split_prompts(n_train: int, n_test: int, seed: int) -> tuple[list[W.Prompt], list[W.Prompt]]:
    """Distinct grammar prompts for train_prefs and test_prefs (disjoint by text), tasks balanced."""
    rng = random.Random(f"feedback-prompts-{seed}")
    seen: set[str] = set()
    out: list[W.Prompt] = []
    tries = 0
    while len(out) < n_train + n_test:
        p = W.sample_prompt(rng, task=W.TASKS[len(out) % len(W.TASKS)])
        tries += 1
        if p.text not in seen or tries > 50 * (n_train + n_test):
            seen.add(p.text)
            out.append(p)
    rng.shuffle(out)
    return out[:n_train], out[n_train:]


def _message(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def rate(prompts: Sequence[W.Prompt], completions: Sequence[Sequence[str]], split: str, rng: random.Random,
         sigma: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rates every completion with the noisy rater and binarizes each prompt's set into one pair.

    Returns (completion rows, preference rows).
    """
    rows: list[dict[str, Any]] = []
    prefs: list[dict[str, Any]] = []
    for p, comps in zip(prompts, completions):
        pid = prompt_id(p.text)
        scored = []
        for c in comps:
            true = rater.true_score(p.text, c)
            noisy = rater.noisy_score(p.text, c, rng, sigma)
            scored.append((noisy, true, c))
            rows.append({"prompt_id": pid, "prompt": p.text, "completion": c, "score": noisy,
                         "true_score": true, "task": p.task, "split": split,
                         "well_formed": rater.well_formed(p.text, c)})
        # an empty completion (EOS first) stays in the table but never in a pair: the schema's loaders refuse it
        usable = [i for i, (_, _, c) in enumerate(scored) if c.strip()]
        if len(usable) < 2:
            continue
        best = max(usable, key=lambda i: scored[i][0])  # first of the highest labels
        others = [i for i in usable if i != best]
        worse = others[rng.randrange(len(others))]
        (sc, tc, c), (sr, tr, r) = scored[best], scored[worse]
        if sc == sr:
            continue
        prefs.append({
            "prompt": p.text, "prompt_id": pid,
            "chosen": _message(p.text, c), "rejected": _message(p.text, r),
            "messages": _message(p.text, c),
            "score_chosen": sc, "score_rejected": sr,
            "true_score_chosen": tc, "true_score_rejected": tr, "task": p.task,
        })
    return rows, prefs
