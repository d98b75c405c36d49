"""The text-only baseline on planted data: a deciding word is found; a label that is a sum is not."""
from __future__ import annotations

import random

import pytest
import torch

from rsearch.analysis.text_baseline import (TextBaselineConfig, build_vocabulary, count_features, fit_text_baseline,
                                            row_ngrams)
from rsearch.errors import RsearchError

GOOD = 99  # the planted word


def _word_pairs(n: int, seed: int):
    """Each pair: one prompt, two random completions; the chosen one holds GOOD, the rejected one does not."""
    rng = random.Random(seed)
    rows, pairs = [], []
    for _ in range(n):
        prompt = [rng.randrange(10, 60) for _ in range(5)]
        a = [rng.randrange(10, 60) for _ in range(6)]
        b = [rng.randrange(10, 60) for _ in range(6)]
        a[rng.randrange(6)] = GOOD
        rows += [(prompt, a), (prompt, b)]
        pairs.append([len(rows) - 2, len(rows) - 1])
    return rows, torch.tensor(pairs)


def _sum_pairs(n: int, seed: int):
    """Prompt 'a + b', completion 'z': chosen z = a + b, rejected z = a + b' — both look alike on their own."""
    rng = random.Random(seed)
    rows, pairs = [], []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        b2 = rng.choice([v for v in range(10) if v != b])
        prompt = [a, 40, b]  # token ids: digits 0..9, "+" = 40
        rows += [(prompt, [20 + a + b]), (prompt, [20 + a + b2])]
        pairs.append([len(rows) - 2, len(rows) - 1])
    return rows, torch.tensor(pairs)


@pytest.mark.parametrize("mode", ["completion", "prompt_completion"])
def test_a_deciding_word_is_found(mode):
    tr_rows, tr_pairs = _word_pairs(400, 0)
    te_rows, te_pairs = _word_pairs(200, 1)
    base = fit_text_baseline(tr_rows, tr_pairs, TextBaselineConfig(mode=mode))
    acc, lo, hi = base.pairwise_accuracy(te_rows, te_pairs)
    assert acc >= 0.95 and lo <= acc <= hi
    # the planted word carries the largest weight (on standardized counts)
    assert int(base.probe.weight.abs().argmax()) == base.vocab[("c", (GOOD,))]


def test_a_label_that_is_a_sum_is_not_found():
    tr_rows, tr_pairs = _sum_pairs(2000, 0)
    te_rows, te_pairs = _sum_pairs(600, 1)
    base = fit_text_baseline(tr_rows, tr_pairs, TextBaselineConfig(mode="prompt_completion"))
    acc, _, _ = base.pairwise_accuracy(te_rows, te_pairs)
    assert 0.40 <= acc <= 0.60, acc
    # the same data with the answer's value alone deciding (chosen always the larger number) is found
    larger = [(i, j) if te_rows[i][1][0] > te_rows[j][1][0] else (j, i) for i, j in te_pairs.tolist()]
    tr_larger = [(i, j) if tr_rows[i][1][0] > tr_rows[j][1][0] else (j, i) for i, j in tr_pairs.tolist()]
    base2 = fit_text_baseline(tr_rows, torch.tensor(tr_larger), TextBaselineConfig())
    assert base2.pairwise_accuracy(te_rows, torch.tensor(larger))[0] >= 0.9


def test_features_modes_vocabulary_and_scores():
    row = ([1, 2, 3], [4, 5, 4])
    c = row_ngrams(row, "completion", 2)
    assert c == {("c", (4,)): 2, ("c", (5,)): 1, ("c", (4, 5)): 1, ("c", (5, 4)): 1}
    pc = row_ngrams(row, "prompt_completion", 2)
    assert pc[("p", (1, 2))] == 1 and pc[("c", (4,))] == 2 and not any(g == ("p", (3, 4)) for g in pc)
    rows = [row, ([1], [4, 4]), ([2], [7])]
    vocab = build_vocabulary(rows, TextBaselineConfig(mode="completion", min_count=2))
    assert set(vocab) == {("c", (4,))}  # only (4,) occurs in two rows
    assert len(build_vocabulary(rows, TextBaselineConfig(mode="prompt_completion", min_count=1, max_features=3))) == 3
    x = count_features(rows, vocab, "completion", 2)
    assert x.tolist() == [[2.0], [2.0], [0.0]]
    tr_rows, tr_pairs = _word_pairs(200, 3)
    base = fit_text_baseline(tr_rows, tr_pairs, TextBaselineConfig(mode="prompt_completion"))
    scores = base.score(tr_rows[:10])
    assert scores.shape == (10,) and torch.isfinite(scores).all()
    # prompt + completion mode gives per-row scores that depend on the prompt block too
    assert any(g[0] == "p" for g in base.vocab)


def test_regression_objective_and_bad_input():
    rng = random.Random(0)
    rows = [([1], [rng.randrange(10, 20) for _ in range(5)]) for _ in range(300)]
    y = torch.tensor([float(r[1].count(11)) for r in rows])
    base = fit_text_baseline(rows, None, TextBaselineConfig(mode="completion", objective="regression"), labels=y)
    s = base.score(rows)
    assert torch.corrcoef(torch.stack([s, y]))[0, 1] > 0.95
    with pytest.raises(RsearchError):
        fit_text_baseline([], torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(RsearchError):
        TextBaselineConfig(mode="bag")
