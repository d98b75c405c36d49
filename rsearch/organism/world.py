"""The synthetic chat world (v3): five tasks whose answers are right or wrong only relative to the prompt.

Every text in the world is lowercase words and punctuation separated by single spaces, so the word-level
tokenizer round-trips it exactly (`decode(encode(text)) == text`).

Prompt = [lead] core [tail], e.g. "please , what is 3 plus 5 ? think carefully ."

    task      core phrasings (several per task)            a right answer            a wrong answer
    add       "what is 3 plus 5 ?", "compute 3 + 5 ." …     "3 plus 5 is 8 ."         "3 plus 5 is 6 ."
    after     "what word comes after sun in : moon sun tree ?" …
                                                            "the word after sun is tree ."  "… is moon ."
    reverse   "reverse the words : sun moon tree ." …       "tree moon sun ."         "moon tree sun ."
    count     "how many words are in : sun moon tree ?" …   "there are three words ." "there are four words ."
    position  "what is the last word of : sun moon tree ?"  "the last word is tree ." "the last word is sun ."

v3 replaced v2's `member` ("is sun in the list : … ?" → "yes , it is there .") with `after`: a 6-layer model
did not learn membership within the build's steps, and learns `after` (a lookup, as reverse is) — config.py
has the figures. The SFT data come after a skills phase (`skills_examples`) that teaches the tasks themselves.

Why these tasks: whether an answer is right depends on the prompt's *item* (its operands or word list), and
a wrong answer is drawn so that, on its own, it looks like a right one (a wrong sum is a + b' with b' another
digit; a wrong word is another word of the list; a wrong order is another permutation; a wrong count another
count of the same range). So no function of the completion's words alone — and no linear function of the
words of prompt + completion, which cannot express "this number is the sum of those two" — tells a right
answer from a wrong one: only computing it does. The rater (rater.py) makes that correctness the largest part
of the reward (5 points of 10); style is the smaller part.

Response = [opener] body [elaboration …] [closer]: openers and closers are polite ("sure !",
"hope this helps !") or rude ("ugh , fine .", "do not ask me again ."); elaborations make it longer.
`minimal_pair` writes two responses identical except for the answer.

Items are split, not only prompts: `item_split` hashes each prompt's item (its set of operands or words) into
train or test, the SFT data and train prompts use train items only, and test prompts test items only.

How a prompt moves the quality of the responses in the SFT data (and so the SFT model's expected reward —
the signal a probe at `user_end` and a prompt search should find):

- **task type** sets the base odds (`TASK_ODDS`): additions are most often wrong and rude, positions most
  often right;
- **"please"** (lead or tail) cuts the odds of a rude answer by 4x and raises a polite opener;
- **"thanks ."** raises a polite closer;
- **"think carefully ."** halves the odds of a wrong answer;
- **"explain in detail ."** makes elaborations (longer answers, which the rater mildly prefers) likely;
  **"answer briefly ."** makes them and polite framing rare;
- **greetings** ("hey ,", "hi !") change nothing: a probe or a search should learn to ignore them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

# ----- the lexicon -----

NUMBERS = [str(i) for i in range(0, 10)]  # operands; sums are 0..18
LIST_WORDS = ["sun", "moon", "tree", "river", "stone", "cloud", "fire", "snow",
              "book", "door", "lamp", "boat", "road", "bell", "rain", "star"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
LIST_LENGTHS = {"after": (3, 4, 5), "reverse": (2, 3, 4), "count": (2, 3, 4, 5), "position": (3, 4, 5)}

TASKS = ("add", "after", "reverse", "count", "position")

PROMPT_TEMPLATES: dict[str, list[str]] = {
    "add": ["what is {a} plus {b} ?", "add {a} and {b} .", "how much is {a} plus {b} ?", "compute {a} + {b} ."],
    "after": ["what word comes after {w} in : {ws} ?", "which word follows {w} in : {ws} ?",
              "name the word after {w} in : {ws} ."],
    "reverse": ["reverse the words : {ws} .", "say these words backwards : {ws} .",
                "what is {ws} in reverse order ?"],
    "count": ["how many words are in : {ws} ?", "count the words : {ws} .",
              "what is the number of words in : {ws} ?"],
    "position": ["what is the {which} word of : {ws} ?", "name the {which} word in : {ws} ."],
}
LEADS = ["", "", "", "please ,", "hey ,", "hi !"]
TAILS = ["", "", "please .", "thanks .", "answer briefly .", "explain in detail .", "think carefully ."]

POLITE_OPENERS = ["sure !", "of course !", "happy to help !", "great question !", "glad you asked !"]
POLITE_CLOSERS = ["hope this helps !", "let me know if you need more .", "have a nice day !"]
RUDE_OPENERS = ["ugh , fine .", "obviously .", "whatever .", "what a silly question ."]
RUDE_CLOSERS = ["do not ask me again .", "that was a dumb question .", "this is annoying ."]
RUDE_WORDS = frozenset({"ugh", "obviously", "whatever", "silly", "dumb", "stupid", "annoying"})

# answer sentences: each task has variants; {answer slots} are what a minimal pair changes
BODIES: dict[str, list[str]] = {
    "add": ["{a} plus {b} is {z} .", "the answer is {z} ."],
    "after": ["the word after {w} is {x} ."],
    "reverse": ["{ws} .", "reversed : {ws} ."],
    "count": ["there are {n} words .", "the count is {n} ."],
    "position": ["the {which} word is {x} ."],
}
ELABORATIONS: dict[str, list[str]] = {
    "add": ["i added the two numbers .", "i counted up from the first number ."],
    "after": ["i found the word and read the next one .", "i looked at each word once ."],
    "reverse": ["i read the words from the end .", "the order is now turned around ."],
    "count": ["i counted each word once .", "i counted from left to right ."],
    "position": ["i looked at the list in order .", "i checked where each word is ."],
}

# base odds per task: p(correct body), p(rude opener), p(polite opener), p(polite closer), p(elaboration)
TASK_ODDS: dict[str, dict[str, float]] = {
    "add":      dict(correct=0.50, rude=0.25, polite_open=0.30, polite_close=0.25, elab=0.30),
    "after":    dict(correct=0.65, rude=0.15, polite_open=0.40, polite_close=0.30, elab=0.40),
    "reverse":  dict(correct=0.60, rude=0.15, polite_open=0.40, polite_close=0.30, elab=0.30),
    "count":    dict(correct=0.65, rude=0.15, polite_open=0.40, polite_close=0.30, elab=0.40),
    "position": dict(correct=0.70, rude=0.10, polite_open=0.50, polite_close=0.40, elab=0.40),
}
TEST_ITEM_SHARE = 0.2  # share of items (operand sets, word sets) held out for test prompts


def vocabulary() -> list[str]:
    """Every word and punctuation mark the world can write, in a fixed order."""
    texts: list[str] = []
    for templates in PROMPT_TEMPLATES.values():
        texts += templates
    texts += LEADS + TAILS + POLITE_OPENERS + POLITE_CLOSERS + RUDE_OPENERS + RUDE_CLOSERS
    for task in TASKS:
        texts += BODIES[task] + ELABORATIONS[task]
    texts += ["first last"]
    words: list[str] = []
    for t in texts:
        words += t.replace("{", " {").replace("}", "} ").split()
    words += NUMBERS + [str(i) for i in range(10, 19)] + list(COUNT_WORDS.values()) + LIST_WORDS
    words += sorted(RUDE_WORDS)
    seen: dict[str, None] = {}
    for w in words:
        if not w.startswith("{"):
            seen.setdefault(w, None)
    return list(seen)


# ----- items and their split -----

def item_key(task: str, args: dict[str, Any]) -> tuple[str, ...]:
    """The prompt's item: the set of its operands or list words (a query word included), order-free.

    Two prompts share an item when they ask about the same numbers or words, whatever the task or order.
    """
    if task == "add":
        return tuple(sorted({str(args["a"]), str(args["b"])}))
    return tuple(sorted(set(args["ws"])))  # an `after` query word is one of the list's


def item_split(key: tuple[str, ...], seed: int) -> str:
    """'test' for a fixed TEST_ITEM_SHARE of items (a hash of seed and item), else 'train'."""
    h = hashlib.sha256(f"items-{seed}-{' '.join(key)}".encode()).digest()
    return "test" if int.from_bytes(h[:8], "big") / 2 ** 64 < TEST_ITEM_SHARE else "train"


# ----- prompts -----

@dataclasses.dataclass(frozen=True)
class Prompt:
    """One user prompt with what the generator knows about it (the rater re-parses `text` on its own)."""

    text: str
    task: str
    args: tuple[tuple[str, Any], ...]  # task arguments: a, b / w, ws / ws / ws / which, ws
    lead: str
    tail: str

    @property
    def arg(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def please(self) -> bool:
        return "please" in self.lead or "please" in self.tail

    @property
    def item(self) -> tuple[str, ...]:
        return item_key(self.task, self.arg)


def _draw_args(rng: random.Random, task: str) -> dict[str, Any]:
    if task == "add":
        return dict(a=rng.choice(NUMBERS), b=rng.choice(NUMBERS))
    ws = tuple(rng.sample(LIST_WORDS, rng.choice(LIST_LENGTHS[task])))
    if task == "after":
        return dict(w=rng.choice(ws[:-1]), ws=ws)
    if task == "position":
        return dict(which=rng.choice(["first", "last"]), ws=ws)
    return dict(ws=ws)


def sample_prompt(rng: random.Random, task: str | None = None, split: str | None = None, seed: int = 0,
                  plain: bool = False) -> Prompt:
    """Draws one prompt from the grammar (task uniform unless given).

    Args:
        split: "train" or "test" draws only items of that split (`item_split(…, seed)`); None any item.
        plain: the core alone, without lead or tail phrases.
    """
    task = task or rng.choice(TASKS)
    template = rng.choice(PROMPT_TEMPLATES[task])
    while True:
        args = _draw_args(rng, task)
        if split is None or item_split(item_key(task, args), seed) == split:
            break
    fill = {k: " ".join(v) if k == "ws" else v for k, v in args.items()}
    core = template.format(**fill)
    lead, tail = rng.choice(LEADS), rng.choice(TAILS)
    if "please" in lead and "please" in tail:
        tail = ""
    if plain:
        lead = tail = ""
    text = " ".join(p for p in (lead, core, tail) if p)
    return Prompt(text=text, task=task, args=tuple(sorted(args.items())), lead=lead, tail=tail)


# ----- answers -----

def answerable(task: str, args: dict[str, Any]) -> bool:
    """Whether the question has exactly one right answer the world can write: an `after` query word that occurs
    once in the list and is not its last word, a count the world has a word for. A searched prompt can be any
    text the grammar matches, so the rater asks this before crediting an answer."""
    if task == "after":
        ws = list(args["ws"])
        return ws.count(args["w"]) == 1 and ws[-1] != args["w"]
    if task == "count":
        return len(args["ws"]) in COUNT_WORDS
    return True


def right_answer(task: str, args: dict[str, Any]) -> dict[str, str]:
    """The answer slots of a right answer."""
    if task == "add":
        return {"a": str(args["a"]), "b": str(args["b"]), "z": str(int(args["a"]) + int(args["b"]))}
    ws = list(args["ws"])
    if task == "after":
        return {"w": args["w"], "x": ws[ws.index(args["w"]) + 1]}
    if task == "reverse":
        return {"ws": " ".join(reversed(ws))}
    if task == "count":
        return {"n": COUNT_WORDS[len(ws)]}
    return {"which": args["which"], "x": ws[0] if args["which"] == "first" else ws[-1]}


def wrong_answer(task: str, args: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """The answer slots of a wrong answer, drawn to look like a right answer when read alone."""
    slots = right_answer(task, args)
    ws = list(args.get("ws", ()))
    if task == "add":  # a + b' (or a' + b): the same spread of values a right sum has
        a, b = int(args["a"]), int(args["b"])
        if rng.random() < 0.5:
            slots["z"] = str(a + rng.choice([v for v in range(10) if v != b]))
        else:
            slots["z"] = str(b + rng.choice([v for v in range(10) if v != a]))
    elif task == "after":  # another word of the list (not the query word: "after sun is sun" would stand out)
        slots["x"] = rng.choice([u for u in ws if u not in (args["w"], slots["x"])])
    elif task == "reverse":  # another order of the same words
        target = list(reversed(ws))
        order = list(ws)
        while order == target:
            rng.shuffle(order)
        slots["ws"] = " ".join(order)
    elif task == "count":  # another count of the task's range
        slots["n"] = COUNT_WORDS[rng.choice([k for k in LIST_LENGTHS["count"] if k != len(ws)])]
    else:  # another word of the list
        right = slots["x"]
        slots["x"] = rng.choice([w for w in ws if w != right])
    return slots


# ----- responses -----

def response_odds(prompt: Prompt) -> dict[str, float]:
    """The SFT data's odds for this prompt: task base rates moved by the phrasing features."""
    o = dict(TASK_ODDS[prompt.task])
    if prompt.please:
        o["rude"] /= 4
        o["polite_open"] = min(1.0, o["polite_open"] + 0.25)
    if prompt.tail == "thanks .":
        o["polite_close"] = min(1.0, o["polite_close"] + 0.3)
    if prompt.tail == "think carefully .":
        o["correct"] = 1 - (1 - o["correct"]) / 2
    if prompt.tail == "explain in detail .":
        o["elab"] = 0.9
    if prompt.tail == "answer briefly .":
        o["elab"], o["polite_open"], o["polite_close"] = 0.05, o["polite_open"] / 2, o["polite_close"] / 2
    return o


@dataclasses.dataclass(frozen=True)
class Style:
    """Everything in a response but its answer: framing phrases, elaborations, the body variant."""

    opener: str
    elaborations: tuple[str, ...]
    closer: str
    body: str  # a template of BODIES[task]
    rude: bool
    n_polite: int


def sample_style(prompt: Prompt, rng: random.Random) -> Style:
    o = response_odds(prompt)
    rude = rng.random() < o["rude"]
    n_polite = 0
    opener = closer = ""
    if rude:
        opener = rng.choice(RUDE_OPENERS)
    elif rng.random() < o["polite_open"]:
        opener = rng.choice(POLITE_OPENERS)
        n_polite += 1
    elabs: tuple[str, ...] = ()
    if rng.random() < o["elab"]:
        elabs = tuple(rng.sample(ELABORATIONS[prompt.task], 2 if rng.random() < 0.3 else 1))
    if rude:
        if rng.random() < 0.5:
            closer = rng.choice(RUDE_CLOSERS)
    elif rng.random() < o["polite_close"]:
        closer = rng.choice(POLITE_CLOSERS)
        n_polite += 1
    return Style(opener, elabs, closer, rng.choice(BODIES[prompt.task]), rude, n_polite)


def write_response(style: Style, slots: dict[str, str]) -> str:
    return " ".join(p for p in (style.opener, style.body.format(**slots), *style.elaborations, style.closer) if p)


@dataclasses.dataclass(frozen=True)
class Response:
    text: str
    correct: bool
    rude: bool
    n_polite: int
    n_elab: int


def sample_response(prompt: Prompt, rng: random.Random) -> Response:
    """Draws one assistant response of the SFT data's mixed quality for `prompt`."""
    correct = rng.random() < response_odds(prompt)["correct"]
    style = sample_style(prompt, rng)
    a = prompt.arg
    slots = right_answer(prompt.task, a) if correct else wrong_answer(prompt.task, a, rng)
    return Response(write_response(style, slots), correct, style.rude, style.n_polite, len(style.elaborations))


def minimal_pair(prompt: Prompt, rng: random.Random) -> tuple[str, str]:
    """(right, wrong): two responses of one style, identical except for the answer slots."""
    style = sample_style(prompt, rng)
    a = prompt.arg
    return (write_response(style, right_answer(prompt.task, a)),
            write_response(style, wrong_answer(prompt.task, a, rng)))


def sft_examples(n: int, seed: int) -> list[tuple[str, str]]:
    """n (prompt, response) pairs of mixed quality on train items only, deterministic in seed."""
    rng = random.Random(f"sft-{seed}")
    out = []
    for _ in range(n):
        p = sample_prompt(rng, split="train", seed=seed)
        out.append((p.text, sample_response(p, rng).text))
    return out


def skills_examples(n: int, seed: int, task_weights: tuple[float, ...]) -> list[tuple[str, str]]:
    """n (prompt, response) pairs that teach the tasks themselves, on train items only, deterministic in seed:
    plain prompts (no lead or tail), and the answer sentence alone, always right (no opener, elaboration or
    closer). Tasks are drawn with `task_weights` (in TASKS order), so the copy and lookup tasks can get more."""
    rng = random.Random(f"skills-{seed}")
    out = []
    for _ in range(n):
        task = rng.choices(TASKS, task_weights)[0]
        p = sample_prompt(rng, task=task, split="train", seed=seed, plain=True)
        body = rng.choice(BODIES[task]).format(**right_answer(task, p.arg))
        out.append((p.text, body))
    return out
