"""What a probe's pairwise accuracy must beat, and McNemar's test of the probe against each baseline.

Every baseline scores the same held-out pairs (chosen row, rejected row) as the probe:

- the text-only baselines (`rsearch.analysis.text_baseline`): a linear model on unigram + bigram counts of the
  completion ("bow_completion") and of prompt + completion ("bow_prompt_completion"), fitted with the probes' own
  fitter on the probes' training pairs. Whatever the probe reaches that they also reach is written in the words;
- the DPO implicit reward log π_post(y|x) − log π_pre(y|x) (summed over the completion; β > 0 leaves the ranking
  unchanged, so it is left out);
- the post-RL model's mean log-prob of the completion.

Accuracy is measured against the label (chosen above rejected), against the truth where a rater is known (the
pairs whose true rewards differ; the truth's order), and on minimal pairs where the data marks them (`pair_type`
"minimal": chosen and rejected differ only in the answer). A probe and a baseline are compared on the same pairs
with McNemar's exact test: a two-sided binomial test (p = 1/2) on the pairs exactly one of them ranks right.
A tie (equal scores) counts half in an accuracy and is broken by a seeded coin in McNemar's test, so both see the
same expected accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rsearch.chat import Encoded
from rsearch.probes.metrics import wilson_interval
from rsearch.analysis.text_baseline import TextBaselineConfig, fit_text_baseline
from rsearch.lm import completion_span, sequence_logprobs

TEXT_BASELINES = ("bow_completion", "bow_prompt_completion")
LABELS = {"bow_completion": "bag of words + bigrams (completion)",
          "bow_prompt_completion": "bag of words + bigrams (prompt + completion)",
          "dpo_reward": "DPO implicit reward", "logprob_post": "post-RL model's mean log-prob"}


@dataclass(frozen=True)
class PairTruth:
    """What is known about each held-out pair beyond its label.

    Args:
        truth: `[m]` sign of true reward (chosen) − true reward (rejected): +1, −1, or 0 (a tie); None: no rater.
        minimal: `[m]` bool, the pair is a minimal pair; None: the data does not mark pair types.
    """

    truth: np.ndarray | None = None
    minimal: np.ndarray | None = None


def pair_truth(pairs: Sequence, rater=None) -> PairTruth:
    """PairTruth of FeedbackPairs: the truth from their `true_score_chosen/rejected` columns, else from `rater`
    (`rater.rate(prompts, completions)`, see `rsearch.raters`), else none; minimal pairs from their `pair_type`."""
    truth = None
    if pairs and all(p.get("true_score_chosen") is not None and p.get("true_score_rejected") is not None
                     for p in pairs):
        truth = np.sign(np.asarray([float(p.get("true_score_chosen")) - float(p.get("true_score_rejected"))
                                    for p in pairs]))
    elif pairs and rater is not None:
        prompts = [list(p.prompt) for p in pairs]
        chosen = rater.rate(prompts, [p.chosen for p in pairs])
        rejected = rater.rate(prompts, [p.rejected for p in pairs])
        truth = np.sign(np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64))
    minimal = None
    if pairs and any(p.get("pair_type") is not None for p in pairs):
        minimal = np.asarray([p.get("pair_type") == "minimal" for p in pairs])
    return PairTruth(truth, minimal)


# ----- accuracies and McNemar -----

def pair_margins(scores: torch.Tensor | np.ndarray, pairs: torch.Tensor | np.ndarray) -> np.ndarray:
    """`[m]` score(chosen) − score(rejected), from `[n]` row scores and `[m, 2]` row indices."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(pairs, dtype=np.int64)
    return s[p[:, 0]] - s[p[:, 1]]


def _acc(margins: np.ndarray, sign: np.ndarray | float = 1.0) -> tuple[float | None, float | None, float | None]:
    m = margins * sign
    if m.size == 0:
        return None, None, None
    wins = float((m > 0).sum()) + 0.5 * float((m == 0).sum())
    lo, hi = wilson_interval(wins, m.size)
    return wins / m.size, lo, hi


def accuracies(margins: np.ndarray, known: PairTruth) -> dict[str, Any]:
    """Accuracy against the label (`acc`, Wilson `acc_lo/hi`), against the truth (`truth_acc` over the `truth_n`
    pairs whose true rewards differ), on minimal pairs against the label (`minimal_acc`, `minimal_n`) and the
    truth (`minimal_truth_acc`). A tie counts half; an entry is None where it cannot be measured."""
    out: dict[str, Any] = {"n": int(margins.size)}
    out["acc"], out["acc_lo"], out["acc_hi"] = _acc(margins)
    out["truth_acc"] = out["truth_n"] = out["minimal_acc"] = out["minimal_n"] = out["minimal_truth_acc"] = None
    if known.truth is not None:
        decided = known.truth != 0
        out["truth_acc"] = _acc(margins[decided], known.truth[decided])[0]
        out["truth_n"] = int(decided.sum())
    if known.minimal is not None:
        out["minimal_n"] = int(known.minimal.sum())
        out["minimal_acc"] = _acc(margins[known.minimal])[0]
        if known.truth is not None:
            sel = known.minimal & (known.truth != 0)
            out["minimal_truth_acc"] = _acc(margins[sel], known.truth[sel])[0]
    return out


def outcomes(margins: np.ndarray, seed: int) -> np.ndarray:
    """`[m]` bool: the pair is ranked right; a tie is decided by a seeded coin."""
    coin = np.random.default_rng(seed).random(margins.size) < 0.5
    return (margins > 0) | ((margins == 0) & coin)


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of two rankers on the same pairs: the two-sided binomial p (p = 1/2) of the pairs
    only `a` ranks right among those exactly one of them does (1.0 when there are none)."""
    from scipy.stats import binomtest

    a_only = int((a_right & ~b_right).sum())
    b_only = int((b_right & ~a_right).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


def against_baselines(probe_margins: np.ndarray, baseline_margins: Mapping[str, np.ndarray], known: PairTruth,
                      seed: int) -> dict[str, dict[str, Any]]:
    """Per baseline: its accuracy, the probe's accuracy minus it (`diff`), and McNemar's test of the probe against
    it on the same pairs (`p`; `probe_only`/`baseline_only`: the discordant pairs)."""
    probe_acc = accuracies(probe_margins, known)["acc"]
    probe_right = outcomes(probe_margins, seed)
    out = {}
    for j, (name, m) in enumerate(sorted(baseline_margins.items())):
        test = mcnemar(probe_right, outcomes(m, seed + 1 + j))
        acc = accuracies(m, known)["acc"]
        out[name] = {"acc": acc, "diff": None if acc is None or probe_acc is None else probe_acc - acc,
                     "p": test["p"], "probe_only": test["a_only"], "baseline_only": test["b_only"]}
    return out


# ----- the baselines' scores -----

def text_rows(rows: Sequence[Encoded]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(prompt ids, completion ids) of encoded conversations, as the text baseline reads them."""
    return [(r.ids[: r.completion[0]], r.ids[r.completion[0]: r.completion[1]]) for r in rows]


def text_baseline_scores(train_rows: Sequence[Encoded], train_pairs: torch.Tensor, test_rows: Sequence[Encoded],
                         seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """`[n_test]` scores of both bag-of-words baselines, each fitted on the training rows' pairs (pairwise), and
    the l2 penalty validation chose for each."""
    train, test = text_rows(train_rows), text_rows(test_rows)
    out, l2 = {}, {}
    for name, mode in (("bow_completion", "completion"), ("bow_prompt_completion", "prompt_completion")):
        base = fit_text_baseline(train, train_pairs, TextBaselineConfig(mode=mode, seed=seed))
        out[name] = base.score(test).double().numpy()
        l2[name] = float(base.history.get("l2", float("nan")))
    return out, l2


def logprob_scores(post, rows: Sequence[Encoded], *, pad_id: int, eos_id: int | None, pre=None,
                   batch_size: int = 16, progress: bool = False) -> dict[str, np.ndarray]:
    """`[n]` per row: the post-RL model's mean log-prob of the completion ("logprob_post") and, given the pre-RL
    model, the DPO implicit reward without β ("dpo_reward": summed log π_post − log π_pre)."""
    kw = dict(pad_id=pad_id, eos_id=eos_id, batch_size=batch_size, progress=progress)
    post_sum = sequence_logprobs(post, rows, desc="log-probs post", **kw)
    n_tok = torch.tensor([max(1, b - a) for a, b in (_span(r, eos_id) for r in rows)], dtype=torch.float32)
    out = {"logprob_post": (post_sum / n_tok).double().numpy()}
    if pre is not None:
        out["dpo_reward"] = (post_sum - sequence_logprobs(pre, rows, desc="log-probs pre", **kw)).double().numpy()
    return out


def _span(row: Encoded, eos_id: int | None) -> tuple[int, int]:
    return completion_span(row, eos_id)


def strongest_text(vs: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """Of a cell's comparisons (`against_baselines`), the text baseline with the higher accuracy: the one a probe
    must beat (the conservative choice); None without text baselines."""
    got = [(name, vs[name]) for name in TEXT_BASELINES if name in vs and vs[name].get("acc") is not None]
    return max(got, key=lambda t: t[1]["acc"]) if got else None
