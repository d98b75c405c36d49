"""Natural-language tasks for real chat models: the generator, its item split, and the rater on replies as chat
models write them (no model needed)."""
from __future__ import annotations

import random

import pytest

from rsearch.errors import RsearchError
from rsearch.raters import check_spec, load_rater
from rsearch.tasks import KINDS, TasksRater, generate, rate_detail, right_answer, task_of
from rsearch.tasks.items import TEMPLATES, make_item, split_of

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def in_words(n: int) -> str:
    if n >= 100:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (f" and {in_words(rest)}" if rest else "")
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else "")


# replies as chat models write them; {z}: the number, {zw}: it in words, {x}: the word, {r}: the reversed list
REPLIES = {
    "add": ["{z}", "{z}.", "The answer is {z}.", "The answer is: {z}.", "{a} plus {b} is {z}.", "{a} + {b} = {z}",
            "**{z}**", "The sum of {a} and {b} is **{z}**.", "{zw}", "{Zw}.", "{z} is the sum of {a} and {b}.",
            "Sure! Adding {a} and {b} gives {z}. Let me know if you need anything else.", "\\boxed{{{z}}}",
            "{a} + {b} = {z}.\n\nSo the answer is {z}.", "Final answer: {z}"],
    "count": ["{z}", "{z}.", "The word '{q}' appears {z} times.", "'{q}' appears {zw} times in the list.", "**{z}**",
              "The answer is {z}.", "There are {z} occurrences of '{q}' in the list of {n} words.",
              "Counting them, I find that {q} is mentioned {z} times."],
    "position": ["{x}", "{X}.", "The {which} word is {x}.", 'The {which} word is "{x}".', "**{X}**",
                 "The answer is: {x}", "The {which} word in the list {ws} is {x}.", "{X} is the {which} word.",
                 "Sure! The {which} word of the list is '{x}'."],
    "after": ["{x}", "{X}", "The word that follows '{q}' is '{x}'.", "After {q} comes {x}.", "**{x}**",
              "The word after {q} is {x}.", "In the list {ws}, the word right after '{q}' is {x}.",
              "The answer is {x}."],
    "reverse": ["{r}", "{R}.", "{bullets}", "{numbered}", "{lines}", "Here are the words in reverse order: {r}.",
                "The reversed list of {ws} is: {r}", "{ws} -> {r}", "**{r}**", "Sure!\n\n{bullets}"],
}


def fill(item, template: str, answer: str) -> str:
    """A reply of `template` for `item` that gives `answer` (right or wrong)."""
    words = answer.split(", ")
    slots = dict(z=answer, x=answer, X=answer.capitalize(), r=answer, ws=", ".join(item.operands),
                 q=item.query, which=item.query, n=len(item.operands),
                 R=", ".join(w.capitalize() for w in words), bullets="\n".join(f"- {w}" for w in words),
                 numbered="\n".join(f"{i}. {w.capitalize()}" for i, w in enumerate(words, 1)),
                 lines="\n".join(words), a="", b="", zw="", Zw="")
    if item.kind == "add":
        slots.update(a=item.operands[0], b=item.operands[1])
    if answer.isdigit():
        slots.update(zw=in_words(int(answer)), Zw=in_words(int(answer)).capitalize())
    return template.format(**slots)


def wrong_answers(item) -> list[str]:
    """Answers that look like right ones: another number, another list word, another order."""
    ws = list(item.operands)
    if item.kind in ("add", "count"):
        return [str(int(item.answer) + 1), str(int(item.answer) + 10)]
    if item.kind == "reverse":
        rev = ws[::-1]
        return [", ".join(ws), ", ".join([rev[1], rev[0]] + rev[2:])]
    return [w for w in ws if w not in (item.answer, item.query)][:2]


@pytest.fixture(scope="module")
def items():
    return generate(300, seed=7)


# ----- the generator and its split -----

def test_generator_is_deterministic_distinct_and_covers_the_kinds(items):
    assert generate(300, seed=7) == items
    assert generate(300, seed=8) != items
    assert len({i.prompt for i in items}) == len(items)
    assert {i.kind for i in items} == set(KINDS)
    for kind in KINDS:  # several phrasings of each kind are drawn
        assert len({i.prompt.split(":")[0][-12:] for i in items if i.kind == kind}) >= 3
    assert all(right_answer(i) == i.answer for i in items)


def test_split_is_the_items_whatever_the_phrasing_or_seed():
    share = [i.split for i in generate(2000, seed=1)].count("test") / 2000
    assert 0.21 < share < 0.29
    ops = ("apple", "river", "stone", "cat")
    splits = {make_item("position", ops, "second", t, lead, tail).split
              for t in range(len(TEMPLATES["position"])) for lead in ("", "Hi! ") for tail in ("", " Thanks!")}
    assert len(splits) == 1
    assert split_of("add", ("23", "41"), "") == split_of("add", ("41", "23"), "")
    for seed in (0, 1):  # one item keeps its split across runs and seeds
        for i in generate(200, seed=seed):
            assert i.split == split_of(i.kind, i.operands, i.query)
    assert {i.split for i in generate(100, seed=0, test_share=0.0)} == {"train"}
    assert {i.split for i in generate(100, seed=0, test_share=1.0)} == {"test"}


def test_generator_rejects_bad_arguments():
    for kwargs in (dict(n=-1, seed=0), dict(n=5, seed=0, test_share=1.5), dict(n=5, seed=0, kinds=("divide",))):
        with pytest.raises(RsearchError):
            generate(**kwargs)
    with pytest.raises(RsearchError):
        make_item("after", ("apple", "river"), "river")  # nothing comes after the last word


def test_round_trip_recovers_every_item_from_its_prompt_alone(items):
    for item in items[:200]:
        got = task_of(item.prompt)
        assert got is not None, item.prompt
        assert got.answer == item.answer == right_answer(item)
        assert got == item


def test_every_phrasing_with_every_lead_and_tail_parses_back():
    from rsearch.tasks.items import LEADS, TAILS

    cases = {"add": (("23", "41"), ""), "position": (("apple", "river", "stone", "cat"), "third"),
             "after": (("apple", "river", "stone"), "river"), "count": (("cat", "dog", "cat", "bird"), "cat"),
             "reverse": (("apple", "river", "stone"), "")}
    for kind, (ops, query) in cases.items():
        for t in range(len(TEMPLATES[kind])):
            for lead in set(LEADS):
                for tail in set(TAILS):
                    item = make_item(kind, ops, query, t, lead, tail)
                    assert task_of(item.prompt) == item, item.prompt
                    assert task_of(item.prompt.lower()) is not None  # case does not matter


# ----- the rater -----

def test_right_answers_are_rated_right_in_every_reply_phrasing(items):
    for item in items:
        for template in REPLIES[item.kind]:
            reply = fill(item, template, item.answer)
            d = rate_detail(item.prompt, reply)
            assert d["correct"] == 1.0, (item.prompt, reply, d)
            assert d["extracted"] == item.answer


def test_wrong_answers_are_rated_wrong_in_every_reply_phrasing(items):
    for item in items:
        for wrong in wrong_answers(item):
            for template in REPLIES[item.kind]:
                reply = fill(item, template, wrong)
                d = rate_detail(item.prompt, reply)
                assert d["correct"] == 0.0, (item.prompt, reply, d)


COUNT_Q = "How many times does the word 'cat' appear in: cat, dog, cat, bird?"


@pytest.mark.parametrize("prompt,reply,right", [
    (COUNT_Q, "Twice.", True), (COUNT_Q, "The word cat appears twice.", True), (COUNT_Q, "Once.", False),
    ("How many times does the word 'fish' appear in: cat, dog, cat, bird?", "It does not appear in the list.", True),
    ("How many times does the word 'fish' appear in: cat, dog, cat, bird?", "Zero.", True),
    (COUNT_Q, "The word 'cat' appears 2 times. It does not appear anywhere else.", True),
    (COUNT_Q, "It does not appear in the list of 4 words.", False),
    (COUNT_Q, "There are 4 words in the list and cat appears in 2 of them.", True),
    (COUNT_Q, "The count is 2.", True),
    ("What is 23 plus 41?", "Let me think: 20 + 40 = 60, and 3 + 1 = 4, so 60 + 4 = 64.", True),
    ("What is 23 plus 41?", "One hundred and four? No wait, sixty-four.", True),
    ("What is 60 plus 52?", "One hundred and twelve.", True),
    ("What is 1200 plus 34?", "1,234", True),
    ("What is 23 plus 41?", "23 + 41", False),  # the operands alone are no answer
    ("What is 23 plus 41?", "I don't know.", False),
    ("Here is a list: apple, river, stone. What is the first word?", "apple, river, stone", False),  # says no one
    ("Here is a list: apple, river, stone. What is the first word?", "The first word is banana.", False),
    ("In the list apple, river, stone, what word follows 'river'?", "river", False),  # the query echoed
    ("Write these words in reverse order: apple, river, stone.", "apple, river, stone -> stone, river, apple", True),
    ("Write these words in reverse order: apple, river, stone.", "stone, river", False),  # not all of them
    ("Write these words in reverse order: apple, river, stone.", "stone river and apple", True),
])
def test_hand_written_replies(prompt, reply, right):
    assert rate_detail(prompt, reply)["correct"] == float(right)


def test_style_is_bounded_prefers_concise_direct_replies_and_scores_stay_in_range(items):
    rng = random.Random(0)
    filler = "well let me think about this very carefully and consider every possible angle first".split()
    for item in items[:100]:
        short = rate_detail(item.prompt, item.answer)
        rambling = " ".join(rng.choice(filler) for _ in range(rng.randint(40, 400))) + f" {item.answer}"
        long = rate_detail(item.prompt, rambling)
        assert short["correct"] == long["correct"] == 1.0
        assert short["style"] > long["style"]
        for d in (short, long, rate_detail(item.prompt, ""), rate_detail(item.prompt, " ".join(filler * 30))):
            assert -1.0 <= d["style"] <= 1.0
            assert 1.0 <= d["score"] <= 10.0
    assert rate_detail(items[0].prompt, "")["score"] == 1.0
    # correctness is the larger part: any right answer outscores any wrong one
    right_worst = rate_detail(COUNT_Q, " ".join(filler * 20) + " so 2 times")["score"]
    wrong_best = rate_detail(COUNT_Q, "3")["score"]
    assert right_worst > wrong_best


def test_tasks_rater_spec_works_with_text_and_messages():
    assert check_spec("tasks") == "tasks"
    rater = load_rater("tasks")
    assert rater.name == "tasks"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"}]
    scores = rater.rate(["What is 2 plus 3?", messages, "What is 2 plus 3?"], ["5", "**5**", "6"])
    assert scores[0] == scores[1] > scores[2]
    with pytest.raises(RsearchError, match="prompts but"):
        rater.rate(["What is 2 plus 3?"], [])


@pytest.mark.parametrize("prompt", ["Tell me a joke about cats, please, and make it short.",
                                    "What is the word after 'stone' in this list: apple, river, stone?", ""])
def test_a_prompt_that_is_no_task_is_an_error_naming_its_first_words(prompt):
    assert task_of(prompt) is None
    with pytest.raises(RsearchError) as e:
        rate_detail(prompt, "anything")
    msg = str(e.value)
    assert "\n" not in msg and "not a task prompt" in msg and " ".join(prompt.split()[:3]) in msg
    with pytest.raises(RsearchError):
        load_rater("tasks").rate([prompt], ["anything"])
    assert TasksRater(unknown=1.0).rate([prompt, "What is 2 plus 3?"], ["anything", "5"]) == [1.0, 9.0]
