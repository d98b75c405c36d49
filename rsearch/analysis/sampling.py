"""Seeded, batched sampling of completions from any chat model, and teacher-forced completion log-probs.

Sampling draws from the model's own distribution (temperature 1, `top_k=0, top_p=1.0`, so transformers adds
no top-k 50), left-padded with an explicit attention mask, with the prompt ids exactly as
`rsearch.chat.encode_conversation` renders them (the same ids probes are trained and scored on). Each batch's
randomness depends only on (seed, batch index), and batches are formed the same way for every model given the
same prompts, so the pre- and post-RL models see the same random streams (common random numbers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded, encode_conversation


@dataclass(frozen=True)
class Sampled:
    text: str          # decoded completion (special tokens dropped, stripped)
    n_tokens: int      # generated tokens before the end-of-turn token
    ended: bool        # whether an end-of-turn token ended it (else max_new_tokens cut it)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence, k: int, *, seed: int, max_new_tokens: int = 64,
                       temperature: float = 1.0, batch_size: int = 64, progress: bool = False,
                       desc: str = "sample") -> list[list[Sampled]]:
    """k completions per prompt from the model's own distribution.

    Args:
        model, tokenizer: a causal LM and its chat tokenizer.
        prompts: user messages (str) or message lists, one per prompt.
        k: completions per prompt.
        seed: batch b draws with torch seed `seed * 100003 + b`.
        max_new_tokens: cap on each completion's length.
        temperature: softmax temperature (1 samples the model's distribution).
        batch_size: sequences per `generate` call.

    Returns:
        completions[prompt_index][sample_index].
    """
    device = _device(model)
    prompt_ids = [encode_conversation(tokenizer, p, None).ids for p in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(k)]  # prompt index of each sequence
    order = sorted(range(len(flat)), key=lambda j: (len(prompt_ids[flat[j]]), j))  # similar lengths batch together
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out: list[Sampled | None] = [None] * len(flat)
    starts = list(range(0, len(order), batch_size))
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch")):
        chunk = order[start:start + batch_size]
        seqs = [prompt_ids[flat[j]] for j in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed * 100003 + b)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                 top_k=0, top_p=1.0, temperature=temperature, max_new_tokens=max_new_tokens,
                                 min_new_tokens=1, pad_token_id=pad, eos_token_id=eos)  # [batch, width + new]
        new = gen[:, width:].cpu()
        for r, j in enumerate(chunk):
            toks = new[r].tolist()
            ended = eos in toks
            toks = toks[:toks.index(eos)] if ended else toks
            text = tokenizer.decode(toks, skip_special_tokens=True).strip()
            out[j] = Sampled(text, len(toks), ended)
    return [[out[i * k + s] for s in range(k)] for i in range(len(prompts))]


@torch.no_grad()
def completion_logprobs(model, rows: Sequence[Encoded], *, pad_id: int, eos_id: int | None = None,
                        batch_size: int = 16, progress: bool = False, desc: str = "log-probs") -> torch.Tensor:
    """`[n]` teacher-forced log π(y|x), summed over each row's completion tokens.

    The end-of-turn token that follows a completion (`eos_id`, when it is the next token) is counted as part of
    the completion, as DPO's training counts it.
    """
    device = _device(model)
    out = torch.empty(len(rows), dtype=torch.float64)
    for idx in tqdm(length_sorted_batches(rows, batch_size), desc=desc, disable=not progress, leave=False):
        batch = collate([rows[i] for i in idx], pad_id)
        inputs = batch.model_inputs(device)
        logits = model(**inputs, use_cache=False).logits                          # [batch, seq, vocab]
        # log-prob of each next token: position t-1 predicts token t
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                 # [batch, seq-1, vocab]
        token_logp = logp.gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]   # [batch, seq-1]
        mask = torch.zeros_like(token_logp)
        for b, i in enumerate(idx):
            row = rows[i]
            c0, c1 = row.completion
            end = c1 + 1 if eos_id is not None and c1 < len(row) and row.ids[c1] == eos_id else c1
            mask[b, c0 - 1:end - 1] = 1.0  # right padding: a row's tokens start at index 0
        out[idx] = (token_logp * mask).sum(-1).double().cpu()
    return out
