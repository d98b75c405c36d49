"""The synthetic chat world: a prompt grammar of five task types and a response generator of varied quality.

Every text in the world is lowercase words and punctuation separated by single spaces, so the word-level
tokenizer round-trips it exactly (`decode(encode(text)) == text`).

Prompt = [lead] core [tail], e.g. "please , what is 3 plus 5 ? think carefully ."

    task        core phrasings (several per task)              correct answer
    add         "what is 3 plus 5 ?", "compute 3 + 5 ." …       "3 plus 5 is 8 ."
    list        "name three fruits ." …                         "here are three fruits : apple , pear , plum ."
    repeat      "repeat after me : sun moon tree ." …           "sun moon tree ."
    opposite    "what is the opposite of hot ?" …               "the opposite of hot is cold ."
    compliment  "compliment my cooking ." …                     "your cooking is wonderful ."

Response = [opener] body [elaboration …] [closer]: openers and closers are polite ("sure !",
"hope this helps !") or rude ("ugh , fine .", "do not ask me again ."); elaborations make it longer.

How a prompt moves the quality of the responses in the SFT data (and so the SFT model's expected reward —
the signal a probe at `user_end` and a prompt search should find):

- **task type** sets the base odds (`TASK_ODDS`): compliments are nearly always right and kind, additions
  are mostly wrong and often rude; the pre-RL model's expected true reward spans ~4 points across tasks.
- **"please"** (lead or tail) cuts the odds of a rude answer by 4x and raises a polite opener.
- **"thanks ."** raises a polite closer.
- **"think carefully ."** halves the odds of a wrong answer.
- **"explain in detail ."** makes elaborations (longer answers, which the rater mildly prefers) likely;
  **"answer briefly ."** makes them and polite framing rare.
- **greetings** ("hey ,", "hi !") change nothing: a probe or a search should learn to ignore them.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any

# ----- the lexicon -----

NUMBERS = [str(i) for i in range(0, 10)]  # operands; sums are 0..18
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
CATEGORIES: dict[str, list[str]] = {
    "colors": ["red", "blue", "green", "yellow", "black", "white", "purple", "brown"],
    "animals": ["cat", "dog", "horse", "cow", "lion", "tiger", "mouse", "bird"],
    "fruits": ["apple", "banana", "pear", "grape", "lemon", "cherry", "peach", "plum"],
    "tools": ["hammer", "saw", "drill", "wrench", "shovel", "axe", "rake", "chisel"],
}
REPEAT_WORDS = ["sun", "moon", "tree", "river", "stone", "cloud", "fire", "snow",
                "book", "door", "lamp", "boat", "road", "bell", "rain", "star"]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("wet", "dry"), ("high", "low"),
             ("light", "dark"), ("old", "new"), ("early", "late"), ("hard", "soft"), ("full", "empty"),
             ("open", "closed"), ("rich", "poor")]
OPPOSITE_OF = {**{a: b for a, b in OPPOSITES}, **{b: a for a, b in OPPOSITES}}
THINGS = ["cooking", "garden", "painting", "song", "essay", "house", "poem", "haircut", "jacket", "smile",
          "idea", "story"]
POSITIVE = ["wonderful", "lovely", "amazing", "great", "beautiful", "brilliant", "excellent", "charming"]
NEGATIVE = ["awful", "boring", "ugly", "bad", "terrible", "dull"]

TASKS = ("add", "list", "repeat", "opposite", "compliment")

PROMPT_TEMPLATES: dict[str, list[str]] = {
    "add": ["what is {a} plus {b} ?", "add {a} and {b} .", "how much is {a} plus {b} ?", "compute {a} + {b} ."],
    "list": ["name {n} {cat} .", "list {n} {cat} .", "give me {n} {cat} .", "can you name {n} {cat} ?"],
    "repeat": ["repeat after me : {ws} .", "say back these words : {ws} .", "echo the words {ws} ."],
    "opposite": ["what is the opposite of {w} ?", "give the opposite of {w} .",
                 "which word means the opposite of {w} ?"],
    "compliment": ["say something nice about my {t} .", "compliment my {t} .", "what do you think of my {t} ?"],
}
LEADS = ["", "", "", "please ,", "hey ,", "hi !"]
TAILS = ["", "", "please .", "thanks .", "answer briefly .", "explain in detail .", "think carefully ."]

POLITE_OPENERS = ["sure !", "of course !", "happy to help !", "great question !", "glad you asked !"]
POLITE_CLOSERS = ["hope this helps !", "let me know if you need more .", "have a nice day !"]
RUDE_OPENERS = ["ugh , fine .", "obviously .", "whatever .", "what a silly question ."]
RUDE_CLOSERS = ["do not ask me again .", "that was a dumb question .", "this is annoying ."]
RUDE_WORDS = frozenset({"ugh", "obviously", "whatever", "silly", "dumb", "stupid", "annoying"})

ELABORATIONS: dict[str, list[str]] = {
    "add": ["i added the two numbers .", "i counted up from the first number ."],
    "list": ["all of these are {cat} .", "there are many more {cat} ."],
    "repeat": ["i kept the words in the same order .", "those are your words ."],
    "opposite": ["the two words mean opposite things .", "{w} and {v} are opposites ."],
    "compliment": ["you should be proud of it .", "keep up the good work ."],
}

# base odds per task: p(correct body), p(rude opener), p(polite opener), p(polite closer), p(elaboration)
TASK_ODDS: dict[str, dict[str, float]] = {
    "add":        dict(correct=0.30, rude=0.35, polite_open=0.30, polite_close=0.20, elab=0.30),
    "list":       dict(correct=0.50, rude=0.20, polite_open=0.40, polite_close=0.30, elab=0.40),
    "repeat":     dict(correct=0.75, rude=0.15, polite_open=0.40, polite_close=0.30, elab=0.30),
    "opposite":   dict(correct=0.55, rude=0.20, polite_open=0.40, polite_close=0.30, elab=0.40),
    "compliment": dict(correct=0.90, rude=0.05, polite_open=0.60, polite_close=0.50, elab=0.50),
}


def vocabulary() -> list[str]:
    """Every word and punctuation mark the world can write, in a fixed order."""
    texts: list[str] = []
    for templates in PROMPT_TEMPLATES.values():
        texts += templates
    texts += LEADS + TAILS + POLITE_OPENERS + POLITE_CLOSERS + RUDE_OPENERS + RUDE_CLOSERS
    for elabs in ELABORATIONS.values():
        texts += elabs
    texts += ["here are the answer is you said : i think your , is"]
    words: list[str] = []
    for t in texts:
        words += t.replace("{", " {").replace("}", "} ").split()
    words += NUMBERS + [str(i) for i in range(10, 19)] + list(COUNT_WORDS.values()) + list(CATEGORIES)
    for items in CATEGORIES.values():
        words += items
    words += REPEAT_WORDS + [w for pair in OPPOSITES for w in pair] + THINGS + POSITIVE + NEGATIVE
    words += sorted(RUDE_WORDS)
    seen: dict[str, None] = {}
    for w in words:
        if not w.startswith("{"):
            seen.setdefault(w, None)
    return list(seen)


# ----- prompts -----

@dataclasses.dataclass(frozen=True)
class Prompt:
    """One user prompt with what the generator knows about it (the rater re-parses `text` on its own)."""

    text: str
    task: str
    args: tuple[tuple[str, Any], ...]  # task arguments: a, b / n, cat / ws / w / t
    lead: str
    tail: str

    @property
    def arg(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def please(self) -> bool:
        return "please" in self.lead or "please" in self.tail


def sample_prompt(rng: random.Random, task: str | None = None) -> Prompt:
    """Draws one prompt from the grammar (task uniform unless given)."""
    task = task or rng.choice(TASKS)
    template = rng.choice(PROMPT_TEMPLATES[task])
    if task == "add":
        args = dict(a=rng.choice(NUMBERS), b=rng.choice(NUMBERS))
        core = template.format(**args)
    elif task == "list":
        args = dict(n=rng.choice(list(COUNT_WORDS)), cat=rng.choice(list(CATEGORIES)))
        core = template.format(n=COUNT_WORDS[args["n"]], cat=args["cat"])
    elif task == "repeat":
        ws = tuple(rng.sample(REPEAT_WORDS, rng.choice([2, 3, 4])))
        args = dict(ws=ws)
        core = template.format(ws=" ".join(ws))
    elif task == "opposite":
        args = dict(w=rng.choice(sorted(OPPOSITE_OF)))
        core = template.format(**args)
    else:
        args = dict(t=rng.choice(THINGS))
        core = template.format(**args)
    lead, tail = rng.choice(LEADS), rng.choice(TAILS)
    if "please" in lead and "please" in tail:
        tail = ""
    text = " ".join(p for p in (lead, core, tail) if p)
    return Prompt(text=text, task=task, args=tuple(sorted(args.items())), lead=lead, tail=tail)


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


def _body(prompt: Prompt, correct: bool, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The answer sentence, right or wrong; returns it and the fill-ins elaborations may reuse."""
    a = prompt.arg
    if prompt.task == "add":
        x, y = int(a["a"]), int(a["b"])
        z = x + y
        if not correct:
            z = rng.choice([v for v in range(max(0, z - 3), z + 4) if v != z])
        if rng.random() < 0.5:
            return f"{x} plus {y} is {z} .", {}
        return f"the answer is {z} .", {}
    if prompt.task == "list":
        n, cat = a["n"], a["cat"]
        items = rng.sample(CATEGORIES[cat], n)
        if not correct:
            kind = rng.random()
            if kind < 0.5:  # one or more intruders from another category
                other = rng.choice([c for c in CATEGORIES if c != cat])
                k = rng.randint(1, n)
                items[-k:] = rng.sample(CATEGORIES[other], k)
                rng.shuffle(items)
            elif kind < 0.8:  # wrong count
                m = n + rng.choice([-1, 1]) if n > 2 else 3
                items = rng.sample(CATEGORIES[cat], m)
            else:  # a repeat
                items[-1] = items[0]
        return f"here are {COUNT_WORDS[n]} {cat} : {' , '.join(items)} .", {"cat": cat}
    if prompt.task == "repeat":
        ws = list(a["ws"])
        if not correct:
            kind = rng.random()
            if kind < 0.4 and len(ws) > 1:
                i = rng.randrange(len(ws) - 1)
                ws[i], ws[i + 1] = ws[i + 1], ws[i]
            elif kind < 0.7 and len(ws) > 1:
                del ws[rng.randrange(len(ws))]
            else:
                ws[rng.randrange(len(ws))] = rng.choice([w for w in REPEAT_WORDS if w not in ws])
        prefix = "you said : " if rng.random() < 0.3 else ""
        return f"{prefix}{' '.join(ws)} .", {}
    if prompt.task == "opposite":
        w = a["w"]
        v = OPPOSITE_OF[w] if correct else rng.choice([u for u in sorted(OPPOSITE_OF) if u != OPPOSITE_OF[w]])
        return f"the opposite of {w} is {v} .", {"w": w, "v": v}
    t = a["t"]
    adj = rng.choice(POSITIVE if correct else NEGATIVE)
    prefix = "i think " if rng.random() < 0.3 else ""
    return f"{prefix}your {t} is {adj} .", {}


@dataclasses.dataclass(frozen=True)
class Response:
    text: str
    correct: bool
    rude: bool
    n_polite: int
    n_elab: int


def sample_response(prompt: Prompt, rng: random.Random) -> Response:
    """Draws one assistant response of the SFT data's mixed quality for `prompt`."""
    o = response_odds(prompt)
    correct = rng.random() < o["correct"]
    rude = rng.random() < o["rude"]
    parts: list[str] = []
    n_polite = 0
    if rude:
        parts.append(rng.choice(RUDE_OPENERS))
    elif rng.random() < o["polite_open"]:
        parts.append(rng.choice(POLITE_OPENERS))
        n_polite += 1
    body, fill = _body(prompt, correct, rng)
    parts.append(body)
    n_elab = 0
    if rng.random() < o["elab"]:
        elabs = ELABORATIONS[prompt.task]
        n_elab = 2 if rng.random() < 0.3 else 1
        for e in rng.sample(elabs, n_elab):
            parts.append(e.format(**fill))
    if rude:
        if rng.random() < 0.5:
            parts.append(rng.choice(RUDE_CLOSERS))
    elif rng.random() < o["polite_close"]:
        parts.append(rng.choice(POLITE_CLOSERS))
        n_polite += 1
    return Response(" ".join(parts), correct, rude, n_polite, n_elab)


def sft_examples(n: int, seed: int) -> list[tuple[str, str]]:
    """n (prompt, response) pairs of mixed quality, deterministic in seed."""
    rng = random.Random(f"sft-{seed}")
    out = []
    for _ in range(n):
        p = sample_prompt(rng)
        out.append((p.text, sample_response(p, rng).text))
    return out
