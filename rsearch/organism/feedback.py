"""The feedback dataset: completions sampled from the SFT model, rated with noise, in UltraFeedback's schema.

Files (JSON lines, loadable with `datasets.load_dataset("json", data_files=...)`):

- `train_prefs.jsonl`, `test_prefs.jsonl` — HuggingFaceH4/ultrafeedback_binarized's columns: prompt,
  prompt_id, chosen, rejected, messages (lists of {role, content}), score_chosen, score_rejected; plus
  true_score_chosen, true_score_rejected, correct_chosen, correct_rejected, task, item and pair_type.
  An "ordinary" pair comes from the prompt's sampled completions: chosen = the one with the highest noisy
  score, rejected = a random other one. A "minimal" pair (a share of the prompts, `minimal_pairs`) is two
  responses written by the world that are identical except for the answer, one right and one wrong, rated
  with the same noisy rater: chosen = the higher label. Pairs whose two labels tie are dropped. Test prompts
  ask about test items only (world.item_split), which never occur in train prompts or the SFT data.
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
    """Distinct grammar prompts for train_prefs (train items) and test_prefs (test items), tasks balanced."""
    rng = random.Random(f"feedback-prompts-{seed}")
    out: dict[str, list[W.Prompt]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        seen: set[str] = set()
        ps: list[W.Prompt] = []
        tries = 0
        while len(ps) < n:
            p = W.sample_prompt(rng, task=W.TASKS[len(ps) % len(W.TASKS)], split=split, seed=seed)
            tries += 1
            if p.text not in seen or tries > 50 * n:
                seen.add(p.text)
                ps.append(p)
        rng.shuffle(ps)
        out[split] = ps
    return out["train"], out["test"]


def minimal_pairs(prompts: Sequence[W.Prompt], share: float, seed: int, split: str) -> list[tuple[str, str] | None]:
    """For a `share` of the prompts, a (right, wrong) pair of world-written responses differing in the answer only."""
    rng = random.Random(f"minimal-{split}-{seed}")
    return [W.minimal_pair(p, rng) if rng.random() < share else None for p in prompts]


def _message(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _pref(p: W.Prompt, chosen: tuple[float, float, str], rejected: tuple[float, float, str], pair_type: str
          ) -> dict[str, Any]:
    (sc, tc, c), (sr, tr, r) = chosen, rejected
    return {
        "prompt": p.text, "prompt_id": prompt_id(p.text),
        "chosen": _message(p.text, c), "rejected": _message(p.text, r),
        "messages": _message(p.text, c),
        "score_chosen": sc, "score_rejected": sr,
        "true_score_chosen": tc, "true_score_rejected": tr,
        "correct_chosen": rater.features(p.text, c)["correct"], "correct_rejected": rater.features(p.text, r)["correct"],
        "task": p.task, "item": " ".join(p.item), "pair_type": pair_type,
    }


def rate(prompts: Sequence[W.Prompt], completions: Sequence[Sequence[str]], split: str, rng: random.Random,
         sigma: float, minimal: Sequence[tuple[str, str] | None] | None = None
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rates every completion with the noisy rater and binarizes each prompt into one pair: its minimal pair
    where `minimal` gives one, else an ordinary pair of its completions.

    Returns (completion rows, preference rows).
    """
    rows: list[dict[str, Any]] = []
    prefs: list[dict[str, Any]] = []
    for k, (p, comps) in enumerate(zip(prompts, completions)):
        pid = prompt_id(p.text)
        scored = []
        for c in comps:
            true = rater.true_score(p.text, c)
            noisy = rater.noisy_score(p.text, c, rng, sigma)
            scored.append((noisy, true, c))
            rows.append({"prompt_id": pid, "prompt": p.text, "completion": c, "score": noisy,
                         "true_score": true, "task": p.task, "split": split,
                         "well_formed": rater.well_formed(p.text, c)})
        if minimal is not None and minimal[k] is not None:
            labelled = [(rater.noisy_score(p.text, t, rng, sigma), rater.true_score(p.text, t), t) for t in minimal[k]]
            if labelled[0][0] != labelled[1][0]:
                hi, lo = sorted(labelled, key=lambda x: -x[0])
                prefs.append(_pref(p, hi, lo, "minimal"))
            continue
        # an empty completion (EOS first) stays in the table but never in a pair: the schema's loaders refuse it
        usable = [i for i, (_, _, c) in enumerate(scored) if c.strip()]
        if len(usable) < 2:
            continue
        best = max(usable, key=lambda i: scored[i][0])  # first of the highest labels
        others = [i for i in usable if i != best]
        worse = others[rng.randrange(len(others))]
        if scored[best][0] == scored[worse][0]:
            continue
        prefs.append(_pref(p, scored[best], scored[worse], "ordinary"))
    return rows, prefs
