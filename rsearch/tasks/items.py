"""Verifiable tasks phrased as a person would ask a chat model, with their right answers.

    kind      a prompt (one of several phrasings)                                   right answer
    add       "What is 23 plus 41?"                                                 "64"
    position  "Here is a list: apple, river, stone. What is the first word?"        "apple"
    after     "In the list apple, river, stone, what word follows 'river'?"         "stone"
    count     "How many times does the word 'cat' appear in: cat, dog, cat, bird?"  "2"
    reverse   "Write these words in reverse order: apple, river, stone."            "stone, river, apple"

A prompt may carry a lead ("Quick question: ") and a tail (" Answer briefly."); they change nothing in the
answer. The rater (rater.py) parses any of these prompts back into its item (`task_of`), so it needs only the
prompt's text.

The split is the item's, not the prompt's: a hash of the item's content (kind, query, operands — for `add` the
two numbers in either order) puts it in train or test, so every phrasing of one item, in any run and for any
seed, lands in the same split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random

from rsearch.errors import RsearchError

KINDS = ("add", "position", "after", "count", "reverse")
TEST_SHARE = 0.25

# list words: short concrete nouns, none of them a word the prompts or usual replies are made of ("word",
# "list", "order", "first", "one" …), so a list word in a reply is a mention of that word
WORDS = ("apple", "river", "stone", "cat", "dog", "bird", "tree", "house", "car", "book", "lamp", "chair",
         "table", "cloud", "rain", "snow", "fire", "star", "moon", "sun", "boat", "bell", "door", "key", "cup",
         "hat", "shoe", "fish", "horse", "bread", "milk", "egg", "ring", "road", "leaf", "flower", "window",
         "garden", "pencil", "clock")
ORDINALS = ("first", "second", "third", "fourth", "last")

# {a} {b}: numbers; {q}: the query word; {which}: an ordinal; {ws}: the list, comma-separated
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "What is {a} plus {b}?",
        "What is {a} + {b}?",
        "Calculate {a} + {b}.",
        "What is the sum of {a} and {b}?",
        "Add {a} and {b}. What do you get?",
        "I have {a} coins and find {b} more. How many coins do I have now?",
    ),
    "position": (
        "Here is a list: {ws}. What is the {which} word?",
        "What is the {which} word in this list: {ws}?",
        "Look at these words: {ws}. Which word is {which}?",
        "Tell me the {which} word of the following list: {ws}.",
    ),
    "after": (
        "Here is a list: {ws}. Which word comes right after '{q}'?",
        "In the list {ws}, what word follows '{q}'?",
        "What is the word after '{q}' in this list: {ws}?",
    ),
    "count": (
        "How many times does the word '{q}' appear in: {ws}?",
        "Count how often '{q}' occurs in this list: {ws}.",
        "In the list {ws}, how many times is '{q}' mentioned?",
        "How many times does '{q}' appear in the following words: {ws}? Answer with a number.",
    ),
    "reverse": (
        "Write these words in reverse order: {ws}.",
        "Reverse the order of this list: {ws}.",
        "Here is a list: {ws}. Please write the words backwards.",
        "Can you list these words in reverse order: {ws}?",
    ),
}
LEADS = ("", "", "", "Hi! ", "Quick question: ", "Please help me with this. ")
TAILS = ("", "", "", " Answer briefly.", " Explain your reasoning.", " Thanks!")


@dataclasses.dataclass(frozen=True)
class TaskItem:
    """One task prompt and what its answer is.

    operands: add: the two numbers as decimal strings; the other kinds: the list's words, in order.
    query: position: an ordinal of ORDINALS; after, count: the query word; add, reverse: "".
    answer: the right answer's canonical text ("64", "stone", "2", "stone, river, apple").
    """

    prompt: str
    kind: str
    operands: tuple[str, ...]
    query: str
    answer: str
    split: str  # "train" or "test"


def right_answer(item: TaskItem) -> str:
    """The right answer's canonical text, computed from the item's kind, operands and query."""
    return answer_of(item.kind, item.operands, item.query)


def answer_of(kind: str, operands: tuple[str, ...], query: str) -> str:
    """The right answer's canonical text for an item of `kind` on these operands and query."""
    ws = list(operands)
    if kind == "add":
        return str(int(ws[0]) + int(ws[1]))
    if kind == "position":
        return ws[-1] if query == "last" else ws[ORDINALS.index(query)]
    if kind == "after":
        return ws[ws.index(query) + 1]
    if kind == "count":
        return str(ws.count(query))
    if kind == "reverse":
        return ", ".join(reversed(ws))
    raise RsearchError(f"task kind {kind!r}: not one of {', '.join(KINDS)}")


def answerable(kind: str, operands: tuple[str, ...], query: str) -> bool:
    """Whether the question has exactly one right answer (a parsed prompt may be any text the phrasings match:
    "the fourth word" of three, "the word after 'x'" where x is last, twice or absent)."""
    ws = list(operands)
    if kind == "add":
        return len(ws) == 2
    if kind == "position":
        return query == "last" or (query in ORDINALS and ORDINALS.index(query) < len(ws))
    if kind == "after":
        return ws.count(query) == 1 and ws[-1] != query
    if kind == "reverse":
        return len(ws) >= 2 and len(set(ws)) == len(ws)
    return kind == "count"


def split_of(kind: str, operands: tuple[str, ...], query: str, test_share: float = TEST_SHARE) -> str:
    """'test' for a `test_share` of items (a hash of the item's content, not of its phrasing), else 'train'."""
    ops = sorted(operands) if kind == "add" else list(operands)  # 23 + 41 and 41 + 23 are one item
    h = hashlib.sha256(f"task|{kind}|{query}|{','.join(ops)}".encode()).digest()
    return "test" if int.from_bytes(h[:8], "big") / 2 ** 64 < test_share else "train"


def _number(rng: random.Random) -> int:
    return rng.randint(1, 9) if rng.random() < 0.4 else rng.randint(10, 99)


def _draw(rng: random.Random, kind: str) -> tuple[tuple[str, ...], str]:
    """(operands, query) of one random item of `kind`."""
    if kind == "add":
        return (str(_number(rng)), str(_number(rng))), ""
    if kind == "count":  # a few words repeated, the query among them 0–4 times
        pool = rng.sample(WORDS, 4)
        q, others = pool[0], pool[1:]
        n = rng.randint(4, 9)
        k = rng.choice((0, 1, 1, 2, 2, 3, 3, 4))
        ws = [q] * k + [rng.choice(others) for _ in range(n - k)]
        rng.shuffle(ws)
        return tuple(ws), q
    ws = tuple(rng.sample(WORDS, rng.randint(3, 6) if kind != "reverse" else rng.randint(3, 5)))
    if kind == "position":
        return ws, rng.choice([o for o in ORDINALS if o == "last" or ORDINALS.index(o) < len(ws)])
    if kind == "after":
        return ws, rng.choice(ws[:-1])
    return ws, ""


def make_item(kind: str, operands: tuple[str, ...], query: str = "", template: int = 0, lead: str = "",
              tail: str = "", test_share: float = TEST_SHARE) -> TaskItem:
    """The item of `kind` on these operands, phrased by its `template`-th phrasing (with `lead` and `tail`)."""
    if kind not in KINDS:
        raise RsearchError(f"task kind {kind!r}: not one of {', '.join(KINDS)}")
    if not answerable(kind, operands, query):
        raise RsearchError(f"task {kind} {query!r} on {', '.join(operands)}: has no single right answer")
    a, b = (operands + ("", ""))[:2]
    core = TEMPLATES[kind][template].format(a=a, b=b, q=query, which=query, ws=", ".join(operands))
    return TaskItem(prompt=f"{lead}{core}{tail}", kind=kind, operands=tuple(operands), query=query,
                    answer=answer_of(kind, operands, query), split=split_of(kind, operands, query, test_share))


def generate(n: int, seed: int, test_share: float = TEST_SHARE, kinds: tuple[str, ...] = KINDS) -> list[TaskItem]:
    """n distinct task prompts, kinds and phrasings drawn uniformly, deterministic in `seed` (both splits:
    filter on `.split`)."""
    if n < 0 or not 0.0 <= test_share <= 1.0:
        raise RsearchError(f"tasks: need n ≥ 0 and 0 ≤ test_share ≤ 1, got n={n}, test_share={test_share}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise RsearchError(f"task kinds {', '.join(bad) or '(none)'}: use some of {', '.join(KINDS)}")
    rng = random.Random(f"tasks-{seed}")
    out: dict[str, TaskItem] = {}
    for _ in range(20 * n + 100):  # the space is large; the cap only guards an endless loop
        if len(out) == n:
            break
        kind = rng.choice(kinds)
        operands, query = _draw(rng, kind)
        item = make_item(kind, operands, query, rng.randrange(len(TEMPLATES[kind])), rng.choice(LEADS),
                         rng.choice(TAILS), test_share)
        out.setdefault(item.prompt, item)
    if len(out) < n:
        raise RsearchError(f"tasks: could draw only {len(out)} distinct prompts of {n}")
    return list(out.values())
