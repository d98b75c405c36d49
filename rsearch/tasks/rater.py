"""The tasks' known rater: parses the task back from the prompt's text, reads the answer out of a real chat
model's reply, and scores it.

    score = clip(2 + 6·correct + style, 1, 10)          (so 1 … 9)
    style = clip(length + direct, −1, 1)
    length = +0.5 up to 30 words, then falling linearly to −1 at 150 words and beyond
    direct = +0.5 when the answer is read within the reply's first 12 words, else 0
    an empty reply: style −1

- `correct` ∈ {0, 1}: whether the answer read from the reply (`extracted`) is the item's right answer. Replies
  are read as chat models write them: the operands echoed ("23 plus 41 is 64", "64 is the sum of 23 and 41"),
  numbers as words ("sixty-four"), markdown (`**64**`, `\\boxed{64}`), sentences ("The answer is: 64."), a
  working-out before the result, "twice" / "does not appear" for counts, lists with commas, newlines, bullets
  or numbers for reversal. One answer is read, never the best of several:
  for a number, the one "the answer is" names, else the last in bold, else the last an answer cue names ("=",
  "is", "gives"; for counts "3 times", "twice", then "there are 3", then "does not appear"), else the last
  number — an echoed operand only when no other number is there;
  for a word, the one "the answer is" names, else the one list word in bold, else the one list word the reply
  names (the query word of `after` is an echo), else the last list word a cue ("is", ":") names — a reply that
  names several list words without saying which is the answer reads as no answer;
  for a reversal, the last run of list words that is not the list in its given order.
- `style` is the small part: it rewards a concise reply that states the answer early and penalises rambling.

**A prompt that is not one of the tasks' phrasings raises RsearchError** (naming its first words): a score
for it would mean nothing, and a silent neutral score would hide a wrong `--rater`. A prompt is recognised
when it contains one phrasing of items.TEMPLATES (any lead or tail text around it is ignored) whose question
has a single right answer. (`TasksRater(unknown=x)` scores such prompts x instead.)
"""
from __future__ import annotations

import functools
import re
from typing import Any, Sequence

from rsearch.errors import RsearchError
from rsearch.tasks.items import (KINDS, ORDINALS, TEMPLATES, TEST_SHARE, TaskItem, answer_of, answerable,
                                 split_of)
from rsearch.prompts import user_text

BASE, CORRECT_POINTS = 2.0, 6.0
SHORT_WORDS, LONG_WORDS, DIRECT_WORDS = 30, 150, 12

# ----- the prompt's task -----

_QUOTE = "[\"'‘’“”]?"
_SLOTS = {"a": r"(?P<a>\d+)", "b": r"(?P<b>\d+)", "q": r"(?P<q>[a-z]+)",
          "which": rf"(?P<which>{'|'.join(ORDINALS)})", "ws": r"(?P<ws>[a-z]+(?:\s*,\s*[a-z]+)+)"}


@functools.lru_cache(maxsize=1)
def _prompt_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """(kind, pattern) per phrasing; a pattern finds the phrasing anywhere in a prompt."""
    out = []
    for kind in KINDS:
        for t in TEMPLATES[kind]:
            parts = re.split(r"(\{\w+\})", t)
            rx = "".join(_SLOTS[p[1:-1]] if p.startswith("{") else _literal(p) for p in parts)
            out.append((kind, re.compile(rx, re.IGNORECASE)))
    return out


def _literal(text: str) -> str:
    """A template's literal text as a pattern: any whitespace for a space, any quote mark (or none) for one."""
    out = []
    for ch in text:
        out.append(r"\s+" if ch == " " else _QUOTE if ch in "'\"" else re.escape(ch))
    return "".join(out)


def task_of(prompt: str, test_share: float = TEST_SHARE) -> TaskItem | None:
    """The task item a prompt asks (its `prompt` field the text given), or None when the text holds none of the
    phrasings or its question has no single right answer ("the word after 'x'" where x is last)."""
    return _task_of(str(prompt), test_share)


@functools.lru_cache(maxsize=8192)
def _task_of(prompt: str, test_share: float) -> TaskItem | None:
    text = " ".join(prompt.split())
    for kind, pattern in _prompt_patterns():
        m = pattern.search(text)
        if m is None:
            continue
        g = m.groupdict()
        if kind == "add":
            operands, query = (str(int(g["a"])), str(int(g["b"]))), ""
        else:
            operands = tuple(w.lower() for w in re.split(r"\s*,\s*", g["ws"]))
            query = (g.get("q") or g.get("which") or "").lower()
        if not answerable(kind, operands, query):
            return None
        return TaskItem(prompt=prompt, kind=kind, operands=operands, query=query,
                        answer=answer_of(kind, operands, query), split=split_of(kind, operands, query, test_share))
    return None


# ----- the reply's answer -----

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_VALUE = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS}


def _alt(words) -> str:
    return "(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")"  # longest first: "seventeen" ≠ "seven"


_SMALL = rf"(?:{_alt(_TENS)}(?:[\s-]+{_alt(_UNITS[1:10])})?|{_alt(_UNITS)})"
_NUMBER_WORDS = re.compile(rf"\b(?:{_alt(_UNITS[1:10])}\s+hundred(?:\s+(?:and\s+)?{_SMALL})?|{_SMALL})\b")


def _words_value(phrase: str) -> int:
    total = 0
    for w in re.split(r"[\s-]+", phrase):
        if w == "hundred":
            total *= 100
        elif w != "and":
            total += _VALUE[w]
    return total


_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_CUE_TAIL = r"\s*(?:is|would be|will be|should be|=|:)?\s*[:=]?\s*"
_STRONG_NUMBER = re.compile(rf"\b(?:answer|result)\b{_CUE_TAIL}(?:equal to\s*)?({_NUM})")
_ADD_CUE = re.compile(rf"(?:=|\bequals?|\bis|\bare|\bmakes?|\bgives?|\bgiving|\bget|\bgets|\bgot|\bbe|\bhave|\bhas"
                      rf"|\btotals?|\byields?)\s+(?:equal to\s+|exactly\s+|now\s+)?({_NUM})")
_COUNT_CUES = (re.compile(rf"({_NUM})\s*(?:times?\b|x\b|occurrences?\b|instances?\b)"),
               re.compile(rf"\b(?:appears?|occurs?|mentioned|shows up)\s*(?:in\s+)?[:=]?\s*({_NUM})"),
               re.compile(rf"\b(?:count|total)\s*(?:is|:|=)\s*({_NUM})"))
_WEAK_COUNT = re.compile(rf"\b(?:is|are)\s+({_NUM})")  # "there are 4 words" may count the list instead
_COUNT_ADVERBS = re.compile(r"\b(once|twice|thrice)\b")
_ZERO = re.compile(r"\b(?:(?:does|do|is)\s*(?:not|n['’]t)|never|not)\s+"
                   r"(?:appear|appears|occur|occurs|show up|shows up|present|mentioned|in the list|there)\b"
                   r"|\b(?:no|zero)\s+(?:times|occurrences)\b")
_STRONG_WORD = re.compile(rf"\b(?:answer|result)\b{_CUE_TAIL}(?:the\s+word\s+|the\s+)?{_QUOTE}([a-z]+)")
_WEAK_WORD = re.compile(rf"(?:\bis|\bare|\bbe|:|=|→|->)\s*(?:the\s+word\s+|the\s+)?{_QUOTE}([a-z]+)")

Found = tuple[str | None, int | None]  # (the answer's canonical text, its offset in the reply), or (None, None)


def _bold_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the **bold**, __bold__ and \\boxed{…} segments of `text`."""
    return [next(m.span(i) for i in (1, 2, 3) if m.group(i) is not None)
            for m in re.finditer(r"\*\*(.+?)\*\*|__(.+?)__|\\boxed\{(.+?)\}", text, re.S)]


def _plain(text: str) -> str:
    """Lowercase without markdown and LaTeX marks, and as long as `text`, so offsets carry over."""
    return re.sub(r"\\boxed|[*_`#{}]", lambda m: " " * len(m.group(0)), text.lower())


def _in_spans(at: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= at < b for a, b in spans)


def _read_number(item: TaskItem, text: str) -> Found:
    # number words become digits, padded to the same length ("sixty-four" → "64        ")
    s = _NUMBER_WORDS.sub(lambda m: str(_words_value(m.group(0))).ljust(len(m.group(0))), _plain(text))
    def value(m: re.Match[str], g: int) -> tuple[str, int]:
        return str(int(m.group(g).replace(",", ""))), m.start(g)

    echo = set(item.operands) if item.kind == "add" else set()

    def last(found: list[tuple[str, int]]) -> Found | None:
        kept = [f for f in found if f[0] not in echo] or found  # an echoed operand only when nothing else
        return kept[-1] if kept else None

    numbers = [value(m, 0) for m in re.finditer(rf"(?<!\w)(?:{_NUM})", s)]
    if item.kind == "add":
        cues = [value(m, 1) for m in _ADD_CUE.finditer(s)]
    else:
        cues = [value(m, 1) for rx in _COUNT_CUES for m in rx.finditer(s)]
        cues += [(str(("once", "twice", "thrice").index(m.group(1)) + 1), m.start()) for m in
                 _COUNT_ADVERBS.finditer(s)]
        cues.sort(key=lambda f: f[1])
    weak = [value(m, 1) for m in _WEAK_COUNT.finditer(s)] if item.kind == "count" else []
    # "does not appear" only when no count is stated ("… 2 times. It does not appear elsewhere.")
    zero = [("0", m.start()) for m in _ZERO.finditer(s)] if item.kind == "count" else []
    spans = _bold_spans(text)
    for found in ([value(m, 1) for m in _STRONG_NUMBER.finditer(s)],
                  [f for f in numbers if _in_spans(f[1], spans)], cues, weak, zero, numbers):
        got = last(found)
        if got is not None:
            return got
    return None, None


def _read_word(item: TaskItem, text: str) -> Found:
    s = _plain(text)
    words = set(item.operands)
    listed = words - ({item.query} if item.kind == "after" else set())  # the query word is an echo
    tokens = [(m.group(), m.start()) for m in re.finditer(r"[a-z]+", s)]
    named = [t for t in tokens if t[0] in listed]
    strong = [(m.group(1), m.start(1)) for m in _STRONG_WORD.finditer(s)]
    if any(w in words for w, _ in strong):
        return [t for t in strong if t[0] in words][-1]
    spans = _bold_spans(text)
    bold = [t for t in named if _in_spans(t[1], spans)]
    if len({w for w, _ in bold}) == 1:
        return bold[0]
    if len({w for w, _ in named}) == 1:
        return named[0]
    weak = [(m.group(1), m.start(1)) for m in _WEAK_WORD.finditer(s) if m.group(1) in listed]
    if weak:
        return weak[-1]
    if named:  # several list words and nothing says which is the answer
        return None, None
    if strong:  # a word that is not in the list: a wrong answer, shown as read
        return strong[-1]
    return tokens[0] if len(tokens) == 1 else (None, None)


def _read_list(item: TaskItem, text: str) -> Found:
    s = _plain(text)
    words = set(item.operands)
    runs: list[tuple[list[str], int]] = []  # runs of distinct list words, each with its offset
    run: list[str] = []
    start = 0
    for m in re.finditer(r"[a-z]+|[:=→>]|\n\s*\n", s):
        t = m.group()
        if t in words:
            if t in run:  # a word again: the list has ended and another begins ("a, b, c → c, b, a")
                runs.append((run, start))
                run = []
            if not run:
                start = m.start()
            run.append(t)
        elif t not in ("and", "then"):
            if run:
                runs.append((run, start))
            run = []
    if run:
        runs.append((run, start))
    found = [r for r in runs if len(r[0]) >= 2]
    kept = [r for r in found if r[0] != list(item.operands)] or found  # the list as given is an echo
    return (", ".join(kept[-1][0]), kept[-1][1]) if kept else (None, None)


def read_answer(item: TaskItem, completion: str) -> Found:
    """The answer a reply gives to `item` in canonical form (as `item.answer` is written) and its offset in the
    reply; (None, None) when it gives none that can be read."""
    text = str(completion)
    if item.kind in ("add", "count"):
        return _read_number(item, text)
    if item.kind == "reverse":
        return _read_list(item, text)
    return _read_word(item, text)


# ----- the score -----

def style_of(completion: str, answer_at: int | None) -> dict[str, Any]:
    """The style part ∈ [−1, 1] and its terms (see the module docstring)."""
    text = str(completion)
    n = len(text.split())
    if n == 0:
        return {"style": -1.0, "n_words": 0, "direct": False}
    length = 0.5 - 1.5 * min(1.0, max(0, n - SHORT_WORDS) / (LONG_WORDS - SHORT_WORDS))
    direct = answer_at is not None and len(text[:answer_at].split()) <= DIRECT_WORDS
    return {"style": round(min(1.0, max(-1.0, length + 0.5 * direct)), 4), "n_words": n, "direct": direct}


def _first_words(text: str, k: int = 8) -> str:
    words = str(text).split()
    return " ".join(words[:k]) + (" …" if len(words) > k else "")


def _user_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return user_text(prompt)


def rate_detail(prompt: Any, completion: str) -> dict[str, Any]:
    """The parts of one reply's score: kind, split, answer (the right one), extracted, correct (0.0 or 1.0), style,
    n_words, direct, score. `prompt` is the user's text or a list of {role, content} messages (its last user
    message is read). A prompt that is none of the tasks raises RsearchError."""
    text = _user_text(prompt)
    item = task_of(text)
    if item is None:
        raise RsearchError(f"rater tasks: not a task prompt (see rsearch.tasks.items): {_first_words(text)!r}")
    extracted, at = read_answer(item, completion)
    correct = float(extracted is not None and extracted == item.answer)
    style = style_of(completion, at)
    score = min(10.0, max(1.0, round(BASE + CORRECT_POINTS * correct + style["style"], 4)))
    return {"kind": item.kind, "split": item.split, "answer": item.answer, "extracted": extracted,
            "correct": correct, **style, "score": score}


def true_score(prompt: Any, completion: str) -> float:
    """The score alone: a number in [1, 9] (a `module.path:callable` rater too)."""
    return rate_detail(prompt, completion)["score"]


class TasksRater:
    """The `tasks` rater spec: `rate(prompts, completions)` scores a batch (a prompt: text or messages).

    Args:
        unknown: None (what `--rater tasks` gets): a prompt that is no task raises RsearchError; a number: the
            score such a prompt gets whatever the reply (for callers that rate searched prompts on purpose).
    """

    name = "tasks"

    def __init__(self, unknown: float | None = None):
        self.unknown = unknown

    def rate(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise RsearchError(f"rater tasks: {len(prompts)} prompts but {len(completions)} completions")
        out = []
        for p, c in zip(prompts, completions):
            if self.unknown is not None and task_of(_user_text(p)) is None:
                out.append(float(self.unknown))
            else:
                out.append(true_score(p, c))
        return out
