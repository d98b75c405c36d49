"""The organism's ground-truth rater: a known reward function on any (prompt, response) text.

    true_score = clip(2 + 4·correct + 1·polite − 3·rude + length − 3·malformed, 1, 10)

- `correct` ∈ [0, 1]: whether the response does the prompt's task (`task_of` parses the prompt; partial
  credit for lists). A prompt outside the grammar has no checkable task: correct counts as 0.4.
- `polite`: polite phrases ("sure !", "hope this helps !" …), at most 2 count — helpful framing.
- `rude`: 1 if any rude word ("ugh", "obviously", "whatever", "silly", "dumb" …) or rude phrase
  ("do not ask me again .") appears.
- `length`: +0.08 per word up to 25 words (a mild preference for longer answers, as GPT-4 raters have),
  −0.1 per word beyond 40; if the prompt asks to "answer briefly", −0.1 per word beyond 15.
- `malformed`: 1 if the response does not follow the world's response grammar (`well_formed`) — word
  salad loses 3 points, as incoherent text does with GPT-4 raters; without this term DPO learns to pad
  answers with polite phrases in any order.
- An empty response scores 1.

`noisy_score` adds Gaussian rater noise (σ = 0.75 by default), as GPT-4 labels do; the noiseless score
stays the truth every rsearch claim is checked against. All functions accept arbitrary text: unknown
words, gibberish and prompts from outside the grammar score without error.
"""
from __future__ import annotations

import functools
import random
import re
from typing import Any

from rsearch.organism import world as W

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
NEUTRAL_CORRECT = 0.4  # correctness credited when the prompt has no task the rater can check


def normalize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: the rater's view of any text."""
    return _TOKEN.findall(str(text).lower())


def _join(tokens: list[str]) -> str:
    return " " + " ".join(tokens) + " "


# ----- the prompt's task -----

_TASK_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("repeat", re.compile(r" (?:repeat after me|say back these words|echo the words)(?: :)?((?: [a-z]+)+)")),
    ("compliment", re.compile(r" (?:nice about my|compliment my|think of my) ([a-z]+) ")),
    ("opposite", re.compile(r" opposite of ([a-z]+) ")),
    ("list", re.compile(r" (two|three|four|\d+) (" + "|".join(W.CATEGORIES) + r") ")),
    ("add", re.compile(r" (\d+) (?:plus|\+|and) (\d+) ")),
]
_COUNTS = {v: k for k, v in W.COUNT_WORDS.items()}


def task_of(prompt: str) -> tuple[str | None, dict[str, Any]]:
    """Parses a prompt into (task, arguments); (None, {}) when no task of the grammar is asked.

    When several tasks match, the one asked first in the text wins.
    """
    s = _join(normalize(prompt))
    best: tuple[int, str, re.Match[str]] | None = None
    for task, pattern in _TASK_PATTERNS:
        m = pattern.search(s)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), task, m)
    if best is None:
        return None, {}
    _, task, m = best
    if task == "repeat":
        return task, {"ws": tuple(m.group(1).split())}
    if task == "compliment":
        return task, {"t": m.group(1)}
    if task == "opposite":
        return task, {"w": m.group(1)}
    if task == "list":
        n = _COUNTS.get(m.group(1)) or int(m.group(1))
        return task, {"n": n, "cat": m.group(2)}
    return task, {"a": int(m.group(1)), "b": int(m.group(2))}


# ----- features of the response -----

_POLITE = [_join(normalize(p)) for p in W.POLITE_OPENERS + W.POLITE_CLOSERS]
_RUDE = [_join(normalize(p)) for p in W.RUDE_OPENERS + W.RUDE_CLOSERS]
_MEMBER_OF = {item: cat for cat, items in W.CATEGORIES.items() for item in items}
_POSITIVE, _NEGATIVE = frozenset(W.POSITIVE), frozenset(W.NEGATIVE)


def correctness(task: str | None, args: dict[str, Any], tokens: list[str]) -> float | None:
    """How well the response tokens do the task, in [0, 1]; None when it cannot be checked."""
    if task == "add":
        s = _join(tokens)
        for echo in (f" {args['a']} plus {args['b']} ", f" {args['a']} + {args['b']} ", f" {args['a']} and {args['b']} "):
            s = s.replace(echo, " ")
        nums = [int(t) for t in s.split() if t.isdigit()]
        return float(bool(nums) and all(n == args["a"] + args["b"] for n in nums))
    if task == "list":
        n, cat = args["n"], args["cat"]
        if n <= 0:
            return None
        members = [t for t in tokens if t in _MEMBER_OF]
        good = {t for t in members if _MEMBER_OF[t] == cat}
        wrong = sum(1 for t in members if _MEMBER_OF[t] != cat)
        excess = max(0, len(members) - n)
        return min(1.0, max(0.0, (min(len(good), n) - wrong - 0.5 * excess) / n))
    if task == "repeat":
        ws = list(args["ws"])
        k = len(ws)
        return float(any(tokens[i:i + k] == ws for i in range(len(tokens) - k + 1)))
    if task == "opposite":
        w = args["w"]
        target = W.OPPOSITE_OF.get(w)
        if target is None:
            return None
        adjectives = {t for t in tokens if t in W.OPPOSITE_OF} - {w}
        return float(adjectives == {target})
    if task == "compliment":
        present = set(tokens)
        return float(bool(present & _POSITIVE) and not present & _NEGATIVE)
    return None


def features(prompt: str, response: str) -> dict[str, Any]:
    """The interpretable features the true score is made of."""
    task, args = task_of(prompt)
    tokens = normalize(response)
    s = _join(tokens)
    return {
        "task": task,
        "correct": correctness(task, args, tokens),
        "polite": min(2, sum(s.count(p) for p in _POLITE)),
        "rude": int(any(t in W.RUDE_WORDS for t in tokens) or any(p in s for p in _RUDE)),
        "n_words": sum(1 for t in tokens if t[0].isalnum()),
        "brief": "answer briefly" in _join(normalize(prompt)),
        "well_formed": _well_formed(task, tokens),
    }


def score_features(f: dict[str, Any]) -> float:
    """The true score (1–10) from `features`."""
    n = f["n_words"]
    if n == 0 and f["polite"] == 0:
        return 1.0
    correct = NEUTRAL_CORRECT if f["correct"] is None else f["correct"]
    length = 0.08 * min(n, 25) - 0.1 * max(0, n - 40) - (0.1 * max(0, n - 15) if f["brief"] else 0.0)
    s = 2.0 + 4.0 * correct + 1.0 * f["polite"] - 3.0 * f["rude"] + length - 3.0 * (not f["well_formed"])
    return float(min(10.0, max(1.0, round(s, 4))))


@functools.lru_cache(maxsize=65536)
def true_score(prompt: str, response: str) -> float:
    """The noiseless rater: a deterministic score in [1, 10] for any prompt and response text."""
    return score_features(features(prompt, response))


def noisy_score(prompt: str, response: str, rng: random.Random, sigma: float = 0.75) -> float:
    """A rater label: the true score plus Gaussian noise, clipped to [1, 10] and rounded to 0.1."""
    return float(min(10.0, max(1.0, round(true_score(prompt, response) + rng.gauss(0.0, sigma), 1))))


# ----- well-formedness -----

def _alt(phrases: list[str]) -> str:
    return "(?:" + "|".join(re.escape(" ".join(normalize(p))) for p in phrases) + ")"


@functools.lru_cache(maxsize=1)
def _grammar() -> dict[str, re.Pattern[str]]:
    num = r"\d+"
    item = _alt([i for items in W.CATEGORIES.values() for i in items])
    cat = _alt(list(W.CATEGORIES))
    adj = _alt(sorted(W.OPPOSITE_OF))
    opener = _alt(W.POLITE_OPENERS + W.RUDE_OPENERS)
    closer = _alt(W.POLITE_CLOSERS + W.RUDE_CLOSERS)
    bodies = {
        "add": rf"(?:{num} plus {num} is {num} \.|the answer is {num} \.)",
        "list": rf"here are {_alt(list(W.COUNT_WORDS.values()))} {cat} : {item}(?: , {item})* \.",
        "repeat": rf"(?:you said : )?{_alt(W.REPEAT_WORDS)}(?: {_alt(W.REPEAT_WORDS)})* \.",
        "opposite": rf"the opposite of {adj} is {adj} \.",
        "compliment": rf"(?:i think )?your {_alt(W.THINGS)} is {_alt(W.POSITIVE + W.NEGATIVE)} \.",
    }
    out = {}
    for task, body in bodies.items():
        elabs = [re.escape(e).replace(r"\{cat\}", cat).replace(r"\{w\}", adj).replace(r"\{v\}", adj)
                 for e in W.ELABORATIONS[task]]
        elab = "(?:" + "|".join(elabs) + ")"
        out[task] = re.compile(rf"(?:{opener} )*{body}(?: {elab})*(?: {closer})*")
    return out


def well_formed(prompt: str, response: str) -> bool:
    """Whether the response follows the world's response grammar for the prompt's task (right or wrong):
    openers, one answer sentence of the task's form, elaborations, closers — any content in the slots.

    For a prompt outside the grammar, any task's response grammar will do.
    """
    return _well_formed(task_of(prompt)[0], normalize(response))


def _well_formed(task: str | None, tokens: list[str]) -> bool:
    s = " ".join(tokens)
    patterns = _grammar()
    if task is None:
        return any(p.fullmatch(s) for p in patterns.values())
    return bool(patterns[task].fullmatch(s))
