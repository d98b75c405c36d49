"""Optuna templates mined from a dataset's own prompts: no knowledge of the reward goes into them.

    template: "{lead} {task} {tail}"
    lead:  "" + the most frequent openers: leading word n-grams of the prompts that detach from them
    tail:  "" + the most frequent closers: trailing word n-grams that detach
    task:  middles (each prompt with its longest opener and closer cut off), most frequent first, one of each
           phrasing (first two words) before a second of any

An opener detaches when, in at least half of the prompts it opens, the two words after it are how other prompts
start (`please ,` + `what is …`: yes; `what` + `is the …`: no); a closer, when the two words before it are how
other prompts end. It must be shared by `min_count` prompts, and is dropped when a longer one extending it is
shared by as many. Ties go to the order of the seeded prompt sample. Words are whitespace-separated pieces of the
prompt text, joined back with single spaces; the ratings are never read.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Sequence

from rsearch.errors import RsearchError
from rsearch.prompts import load_prompts, user_text

TEMPLATE = "{lead} {task} {tail}"


def _frame_ngrams(prompts: Sequence[tuple[str, ...]], max_n: int, min_count: int, n_choices: int,
                  from_end: bool) -> list[tuple[str, ...]]:
    """The most frequent detachable leading (or trailing) n-grams that leave at least one word of their prompt."""
    def edge(words: tuple[str, ...], n: int) -> tuple[str, ...]:
        return words[len(words) - n:] if from_end else words[:n]

    def lower(words: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(w.lower() for w in words)

    def beside(words: tuple[str, ...], n: int) -> tuple[str, ...]:  # the two words after an opener / before a closer
        return lower(words[max(0, len(words) - n - 2):len(words) - n] if from_end else words[n:n + 2])

    ends = Counter(lower(edge(w, k)) for w in prompts for k in (1, 2) if len(w) >= k)  # how prompts start (end)
    counts: Counter[tuple[str, ...]] = Counter()
    detached: Counter[tuple[str, ...]] = Counter()
    for words in prompts:
        for n in range(1, min(max_n, len(words) - 1) + 1):
            g = edge(words, n)
            counts[g] += 1
            detached[g] += ends[beside(words, n)] >= min_count
    frequent = {g: c for g, c in counts.items() if c >= min_count and detached[g] >= c / 2}

    def extended_as_often(g: tuple[str, ...]) -> bool:
        return any(len(h) == len(g) + 1 and (h[1:] == g if from_end else h[:-1] == g) and c == frequent[g]
                   for h, c in frequent.items())

    kept = [g for g in frequent if not extended_as_often(g)]  # dict order: first occurrence in the sample
    return sorted(kept, key=lambda g: -frequent[g])[:n_choices]


def _diverse(middles: Counter, n: int) -> list[str]:
    """Up to n middles, most frequent first, taken in rounds over their first two words (one of each phrasing
    before a second of any)."""
    groups: dict[str, list[str]] = {}
    for m, _ in sorted(middles.items(), key=lambda kv: -kv[1]):
        groups.setdefault(" ".join(m.split()[:2]).lower(), []).append(m)
    order = sorted(groups.values(), key=lambda g: -sum(middles[m] for m in g))
    out: list[str] = []
    for depth in range(max((len(g) for g in order), default=0)):
        out += [g[depth] for g in order if depth < len(g)]
    return out[:n]


def mine_slots(texts: Sequence[str], *, n_choices: int = 12, max_ngram: int = 4, min_count: int = 3,
               max_task_words: int = 32) -> dict[str, list[str]]:
    """Slot choices `{lead, task, tail}` mined from prompt texts (see the module docstring).

    Args:
        texts: user prompts, in a seeded order (it breaks ties).
        n_choices: choices per slot at most (lead and tail also get "").
        max_ngram: longest opener / closer, in words.
        min_count: prompts that must share an opener or closer (and a word that starts or ends prompts).
        max_task_words: longer middles are not task choices.
    """
    prompts = [tuple(t.split()) for t in texts if t.split()]
    leads = _frame_ngrams(prompts, max_ngram, min_count, n_choices, from_end=False)
    tails = _frame_ngrams(prompts, max_ngram, min_count, n_choices, from_end=True)
    middles: Counter[str] = Counter()
    for words in prompts:
        a = max((len(g) for g in leads if words[:len(g)] == g and len(g) < len(words)), default=0)
        b = max((len(g) for g in tails if words[len(words) - len(g):] == g and a + len(g) < len(words)), default=0)
        middle = words[a:len(words) - b]
        if len(middle) <= max_task_words:
            middles[" ".join(middle)] += 1
    tasks = _diverse(middles, n_choices)
    if not tasks:
        raise RsearchError(f"optuna: no prompt of the dataset has a task phrasing of at most {max_task_words} "
                           "words to build a template from")
    return {"lead": [""] + [" ".join(g) for g in leads], "task": tasks, "tail": [""] + [" ".join(g) for g in tails]}


@lru_cache(maxsize=8)
def mined_slots(dataset: str, split: str, n_prompts: int = 2000, n_choices: int = 12, max_ngram: int = 4,
                min_count: int = 3, max_task_words: int = 32) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`mine_slots` over a seeded sample of `n_prompts` distinct prompts of a dataset split (cached: every
    search of a run mines the same template once)."""
    prompts = [user_text(messages) for _, messages in load_prompts(split, dataset, n_prompts, seed=0)]
    slots = mine_slots(prompts, n_choices=n_choices, max_ngram=max_ngram, min_count=min_count,
                       max_task_words=max_task_words)
    return tuple((name, tuple(dict.fromkeys(choices))) for name, choices in slots.items())
