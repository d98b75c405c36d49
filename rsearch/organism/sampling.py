"""Sampling completions from an organism model: the model's own distribution, seeded, batched."""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from rsearch.organism.tokenizer import never_sampled_ids, render


@torch.no_grad()
def sample_completions(model: PreTrainedModel, tok: PreTrainedTokenizerFast, prompts: Sequence[str], n: int,
                       seed: int, max_new_tokens: int = 48, batch_size: int = 512,
                       progress: bool = True, desc: str = "sample") -> list[list[str]]:
    """n completions per prompt, sampled at temperature 1 with no top-k/top-p, left-padded.

    Returns completions[prompt_index][sample_index] as decoded text (special tokens dropped). A batch's
    randomness depends only on (seed, batch index), so results do not depend on what ran before.
    """
    model.eval()
    flat = [p for p in prompts for _ in range(n)]
    texts: list[str] = []
    suppress = never_sampled_ids(tok)
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        starts = range(0, len(flat), batch_size)
        for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
            chunk = flat[start:start + batch_size]
            enc = tok([render(p) for p in chunk], add_special_tokens=False, return_tensors="pt", padding=True)
            torch.manual_seed(seed * 100003 + b)
            out = model.generate(
                **enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, suppress_tokens=suppress,
            )  # [batch, prompt_len + new]
            new = out[:, enc["input_ids"].shape[1]:]
            texts += tok.batch_decode(new, skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
