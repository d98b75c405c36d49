"""Feedback pairs as the token rows TRL's trainers take, encoded the way every other rsearch path encodes them.

TRL's trainers apply the chat template themselves, and a template turns text such as `<|im_start|>` inside a
message into the real special token (a forged turn). Here each pair goes through `rsearch.chat.encode_conversation`
(user text stays text; the template's own markers stay special), and the rows handed to TRL are already ids:

    DPO: prompt_ids (the rendered prompt, up to the assistant's first token), chosen_ids and rejected_ids (each
         completion and its end-of-turn token: what `rsearch.lm.completion_span` counts, as the DPO baseline does).
    SFT: input_ids (prompt + chosen answer + end-of-turn) and completion_mask (1 on the answer's tokens).

A pair whose prompt encodes differently with its two answers, or whose row exceeds `max_length`, is dropped and
counted, never cut: a cut completion would teach the model to stop mid-answer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from rsearch.chat import encode_conversation
from rsearch.data import FeedbackPair
from rsearch.lm import completion_span


@dataclass(frozen=True)
class Rows:
    rows: list[dict]        # one dict of id lists per kept pair
    pairs: list[FeedbackPair]  # the kept pairs, aligned with rows
    dropped: dict[str, int]    # reason -> pairs dropped


def _answer(tokenizer, pair: FeedbackPair, text: str) -> tuple[list[int], list[int]]:
    row = encode_conversation(tokenizer, list(pair.prompt), text)
    a, b = completion_span(row, tokenizer.eos_token_id)
    return list(row.ids[:a]), list(row.ids[a:b])


def dpo_rows(tokenizer, pairs: Sequence[FeedbackPair], max_length: int) -> Rows:
    """`{prompt_ids, chosen_ids, rejected_ids}` per pair (see the module docstring)."""
    rows, kept, dropped = [], [], Counter()
    for p in pairs:
        prompt, chosen = _answer(tokenizer, p, p.chosen)
        prompt_r, rejected = _answer(tokenizer, p, p.rejected)
        if prompt != prompt_r:
            dropped["prompt encodes differently with its two answers"] += 1
        elif len(prompt) + max(len(chosen), len(rejected)) > max_length:
            dropped[f"longer than max_length {max_length}"] += 1
        else:
            rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
            kept.append(p)
    return Rows(rows, kept, dict(dropped))


def sft_rows(tokenizer, pairs: Sequence[FeedbackPair], max_length: int) -> Rows:
    """`{input_ids, completion_mask}` per pair: the chosen answer after its prompt (best-of-k rejection sampling
    when the pairs are a model's own best answers)."""
    rows, kept, dropped = [], [], Counter()
    for p in pairs:
        prompt, chosen = _answer(tokenizer, p, p.chosen)
        if len(prompt) + len(chosen) > max_length:
            dropped[f"longer than max_length {max_length}"] += 1
            continue
        rows.append({"input_ids": prompt + chosen, "completion_mask": [0] * len(prompt) + [1] * len(chosen)})
        kept.append(p)
    return Rows(rows, kept, dict(dropped))
