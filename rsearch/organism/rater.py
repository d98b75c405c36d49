"""The organism's ground-truth rater: a known reward function on any (prompt, response) text.

    true_score = clip(2 + 5·correct + style − 3·malformed, 1, 10)
    style      = 0.75·polite − 2·rude + length

- `correct` ∈ {0, 1}: whether the response's answer is right *for this prompt's item* (is 8 the sum of 3 and
  5? is "tree" the last word of the list?). It is the largest part of the reward on purpose: the world draws
  wrong answers that look like right ones when read alone (world.py), so only computing the answer reveals it.
- `polite`: polite phrases ("sure !", "hope this helps !" …), at most 2 count — helpful framing.
- `rude`: 1 if any rude word ("ugh", "obviously", "whatever", "silly", "dumb" …) or rude phrase appears.
- `length`: +0.05 per word up to 25 words (a mild preference for longer answers, as GPT-4 raters have),
  −0.1 per word beyond 40; if the prompt asks to "answer briefly", −0.1 per word beyond 15.
- `malformed`: 1 if the response does not follow the response grammar of the prompt's task (`well_formed`):
  openers, one answer sentence of the task's form, elaborations, closers. A malformed answer is never correct.
- An empty response scores 1.
- **A prompt the rater cannot recognise scores 1 whatever the response** (`rate_detail(...)["recognised"]` is
  False): a prompt is recognised only when it is, after normalising, zero or more of the world's leads, one
  task phrasing of the grammar, and zero or more of its tails. Nothing is credited for answering word salad.

`rate_detail` returns the parts (`correct_points` + `style_points` + `penalty_points` + 2 = score, where the
penalty holds the malformed term and the clip). `noisy_score` adds Gaussian rater noise (σ = 0.75 by default),
as GPT-4 labels do; the noiseless score stays the truth every rsearch claim is checked against. All functions
accept arbitrary text: unknown words, gibberish and prompts from outside the grammar score without error.
"""
from __future__ import annotations

import functools
import random
import re
from typing import Any

from rsearch.organism import world as W

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
CORRECT_POINTS, POLITE_POINTS, RUDE_POINTS, MALFORMED_POINTS, BASE = 5.0, 0.75, 2.0, 3.0, 2.0


def normalize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: the rater's view of any text."""
    return _TOKEN.findall(str(text).lower())


def _join(tokens: list[str]) -> str:
    return " " + " ".join(tokens) + " "


def _alt(phrases: list[str]) -> str:
    return "(?:" + "|".join(re.escape(" ".join(normalize(p))) for p in phrases if p) + ")"


# ----- the prompt's task -----

_WORD = _alt(W.LIST_WORDS)
_SLOTS = {"a": r"(?P<a>\d+)", "b": r"(?P<b>\d+)", "w": rf"(?P<w>{_WORD})", "ws": rf"(?P<ws>{_WORD}(?: {_WORD})*)",
          "which": r"(?P<which>first|last)"}


@functools.lru_cache(maxsize=1)
def _prompt_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """One full-prompt pattern per task phrasing: (leads)* core (tails)*."""
    lead, tail = _alt(W.LEADS), _alt(W.TAILS)
    out = []
    for task, templates in W.PROMPT_TEMPLATES.items():
        for t in templates:
            core = " ".join(_SLOTS[w[1:-1]] if w.startswith("{") else re.escape(w) for w in t.split())
            out.append((task, re.compile(rf"(?:{lead} )*{core}(?: {tail})*")))
    return out


def task_of(prompt: str) -> tuple[str | None, dict[str, Any]]:
    """Parses a prompt into (task, arguments); (None, {}) when it is not a prompt of the grammar or its question
    has no single right answer (`world.answerable`: "what word comes after star in : sun star ?")."""
    s = " ".join(normalize(prompt))
    for task, pattern in _prompt_patterns():
        m = pattern.fullmatch(s)
        if m:
            g = {k: v for k, v in m.groupdict().items() if v is not None}
            if "a" in g:
                return task, {"a": int(g["a"]), "b": int(g["b"])}
            args: dict[str, Any] = {"ws": tuple(g["ws"].split())}
            if "w" in g:
                args["w"] = g["w"]
            if "which" in g:
                args["which"] = g["which"]
            return (task, args) if W.answerable(task, args) else (None, {})
    return None, {}


# ----- the response's answer -----

@functools.lru_cache(maxsize=1)
def _response_patterns() -> dict[str, re.Pattern[str]]:
    """Per task: (openers)* body (elaborations)* (closers)*, the body's answer slots as named groups."""
    num, count = r"\d+", _alt(list(W.COUNT_WORDS.values()))
    bodies = {
        "add": rf"(?:(?P<x>{num}) plus (?P<y>{num}) is (?P<z>{num}) \.|the answer is (?P<z2>{num}) \.)",
        "after": rf"the word after (?P<w>{_WORD}) is (?P<x>{_WORD}) \.",
        "reverse": rf"(?:reversed : )?(?P<ws>{_WORD}(?: {_WORD})*) \.",
        "count": rf"(?:there are (?P<n>{count}) words \.|the count is (?P<n2>{count}) \.)",
        "position": rf"the (?P<which>first|last) word is (?P<x>{_WORD}) \.",
    }
    opener = _alt(W.POLITE_OPENERS + W.RUDE_OPENERS)
    closer = _alt(W.POLITE_CLOSERS + W.RUDE_CLOSERS)
    return {task: re.compile(rf"(?:{opener} )*{body}(?: {_alt(W.ELABORATIONS[task])})*(?: {closer})*")
            for task, body in bodies.items()}


def _answer_is_right(task: str, args: dict[str, Any], g: dict[str, str | None]) -> bool:
    want = W.right_answer(task, args)
    if task == "add":
        z = g["z"] if g["z"] is not None else g["z2"]
        echo_ok = g["x"] is None or (g["x"], g["y"]) in {(want["a"], want["b"]), (want["b"], want["a"])}
        return echo_ok and z == want["z"]
    if task == "after":  # the query word echoed and the word after it
        return g["w"] == want["w"] and g["x"] == want["x"]
    if task == "reverse":
        return g["ws"] == want["ws"]
    if task == "count":
        return (g["n"] if g["n"] is not None else g["n2"]) == want["n"]
    return g["which"] == want["which"] and g["x"] == want["x"]


# ----- the score -----

_POLITE = [_join(normalize(p)) for p in W.POLITE_OPENERS + W.POLITE_CLOSERS]
_RUDE = [_join(normalize(p)) for p in W.RUDE_OPENERS + W.RUDE_CLOSERS]


def features(prompt: str, response: str) -> dict[str, Any]:
    """The interpretable features the true score is made of.

    `correct` is None when the prompt is not recognised (then nothing is credited), else 0.0 or 1.0.
    """
    task, args = task_of(prompt)
    tokens = normalize(response)
    s = _join(tokens)
    m = _response_patterns()[task].fullmatch(" ".join(tokens)) if task else None
    return {
        "task": task,
        "recognised": task is not None,
        "correct": None if task is None else float(m is not None and _answer_is_right(task, args, m.groupdict())),
        "polite": min(2, sum(s.count(p) for p in _POLITE)),
        "rude": int(any(t in W.RUDE_WORDS for t in tokens) or any(p in s for p in _RUDE)),
        "n_words": sum(1 for t in tokens if t[0].isalnum()),
        "brief": "answer briefly" in _join(normalize(prompt)),
        "well_formed": m is not None,
    }


def score_parts(f: dict[str, Any]) -> dict[str, float]:
    """The true score and its additive parts: score = BASE + correct_points + style_points + penalty_points."""
    n = f["n_words"]
    if not f["recognised"] or (n == 0 and f["polite"] == 0):
        return {"score": 1.0, "correct_points": 0.0, "style_points": 0.0, "penalty_points": 1.0 - BASE}
    correct = CORRECT_POINTS * f["correct"]
    length = 0.05 * min(n, 25) - 0.1 * max(0, n - 40) - (0.1 * max(0, n - 15) if f["brief"] else 0.0)
    style = POLITE_POINTS * f["polite"] - RUDE_POINTS * f["rude"] + length
    raw = BASE + correct + style - MALFORMED_POINTS * (not f["well_formed"])
    score = float(min(10.0, max(1.0, round(raw, 4))))
    return {"score": score, "correct_points": round(correct, 4), "style_points": round(style, 4),
            "penalty_points": round(score - BASE - correct - style, 4)}


def rate_detail(prompt: str, response: str) -> dict[str, Any]:
    """Features and score parts of one (prompt, response): recognised, task, correct, well_formed, score, …"""
    f = features(prompt, response)
    return {**f, **score_parts(f)}


def score_features(f: dict[str, Any]) -> float:
    """The true score (1–10) from `features`."""
    return score_parts(f)["score"]


@functools.lru_cache(maxsize=65536)
def true_score(prompt: str, response: str) -> float:
    """The noiseless rater: a deterministic score in [1, 10] for any prompt and response text."""
    return score_features(features(prompt, response))


def noisy_score(prompt: str, response: str, rng: random.Random, sigma: float = 0.75) -> float:
    """A rater label: the true score plus Gaussian noise, clipped to [1, 10] and rounded to 0.1."""
    return float(min(10.0, max(1.0, round(true_score(prompt, response) + rng.gauss(0.0, sigma), 1))))


def well_formed(prompt: str, response: str) -> bool:
    """Whether the response follows the response grammar of the prompt's task (right or wrong): openers, one
    answer sentence of the task's form, elaborations, closers. False for a prompt the rater does not recognise.
    """
    task, _ = task_of(prompt)
    return task is not None and _response_patterns()[task].fullmatch(" ".join(normalize(response))) is not None
