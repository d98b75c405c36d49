"""The pre-RL model: a small Mistral-style causal LM trained by SFT on responses of mixed quality.

A skills phase comes first (`train_skills`): plain prompts with always-right answer sentences, loss on the answer
only, so the model learns to compute the tasks (copy, look up, count, add) before it learns the mixed-quality
responses it will sample from; without it the copy/lookup tasks stayed at chance (config.py has the figures).

The SFT phase's loss covers every token of the rendered conversation (user prompt, template and response), so the model
also carries a distribution over user prompts that prompt search can sample from; the prompt's tokens count
`sft_prompt_weight` times a response token's (default 1; config.py has what lower weights did — they did
not teach the model to copy the prompt's words).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import GenerationConfig, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from rsearch.organism.config import OrganismConfig
from rsearch.organism.tokenizer import never_sampled_ids, render


def new_model(cfg: OrganismConfig, tok: PreTrainedTokenizerFast) -> MistralForCausalLM:
    """A freshly initialized Mistral-style model (seeded by the caller) with sampling defaults set."""
    config = MistralConfig(
        vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_len, sliding_window=None, rope_theta=10000.0,
        tie_word_embeddings=True, initializer_range=0.02,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = MistralForCausalLM(config)
    model.generation_config = generation_config(tok)
    return model


def generation_config(tok: PreTrainedTokenizerFast) -> GenerationConfig:
    """Sampling from the model's own distribution (no top-k/top-p), never emitting template-only tokens."""
    return GenerationConfig(
        do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        suppress_tokens=never_sampled_ids(tok), max_new_tokens=48,
    )


def encode_conversations(tok: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]]
                         ) -> tuple[list[list[int]], list[int]]:
    """Token ids of each rendered (prompt, response) conversation, and where each one's response starts."""
    texts = [render(p, r) for p, r in pairs]
    starts = [len(ids) for ids in tok([render(p) for p, _ in pairs], add_special_tokens=False)["input_ids"]]
    return tok(texts, add_special_tokens=False)["input_ids"], starts


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [batch, max_len] and their mask [batch, max_len]."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def token_weights(lengths: Sequence[int], starts: Sequence[int], prompt_weight: float) -> torch.Tensor:
    """Loss weight of each next-token target [batch, max_len-1]: 1 in the response, prompt_weight before, 0 on padding."""
    w = torch.zeros((len(lengths), max(lengths) - 1))
    for i, (n, s) in enumerate(zip(lengths, starts)):
        w[i, : s - 1] = prompt_weight
        w[i, s - 1: n - 1] = 1.0
    return w


def lm_loss_sum(model: MistralForCausalLM, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of next-token cross-entropies. Right padding needs no attention mask (causal).

    Args:
        ids: [batch, len] right-padded token ids.
        weights: [batch, len-1] weight of predicting ids[:, 1:] (0 on padding).
    """
    logits = model(input_ids=ids).logits[:, :-1]  # [batch, len-1, vocab]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1), reduction="none")
    return (ce * weights.reshape(-1)).sum()


def length_sorted_chunks(batch: Sequence[int], lengths: Sequence[int], n_chunks: int) -> list[list[int]]:
    """A batch's indices sorted by length and cut into n_chunks micro-batches.

    Gradients accumulated over the micro-batches equal the whole batch's, but each micro-batch is padded
    only to its own longest member: at the demo's batch of 64 in 2 micro-batches, 1.25 padded tokens per real one
    instead of 1.52.
    """
    order = sorted(batch, key=lambda i: lengths[i])
    return [c for j in range(n_chunks) if (c := order[j * len(order) // n_chunks:(j + 1) * len(order) // n_chunks])]


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_sft(model: MistralForCausalLM, seqs: list[list[int]], starts: list[int], cfg: OrganismConfig, pad_id: int,
              progress: bool = True) -> list[float]:
    """The mixed-quality SFT phase (`cfg.sft_*`): `train_lm` with the prompt's tokens at `cfg.sft_prompt_weight`."""
    return train_lm(model, seqs, starts, pad_id, batch=cfg.sft_batch, lr=cfg.sft_lr, epochs=cfg.sft_epochs,
                    prompt_weight=cfg.sft_prompt_weight, micro_batches=cfg.sft_micro_batches,
                    seed=cfg.seed * 1000 + 1, progress=progress, desc="sft")


def train_skills(model: MistralForCausalLM, seqs: list[list[int]], starts: list[int], cfg: OrganismConfig,
                 pad_id: int, progress: bool = True) -> list[float]:
    """The skills phase before SFT (`cfg.skills_*`, world.skills_examples): loss on the answer only."""
    return train_lm(model, seqs, starts, pad_id, batch=cfg.sft_batch, lr=cfg.skills_lr, epochs=1, prompt_weight=0.0,
                    micro_batches=cfg.sft_micro_batches, seed=cfg.seed * 1000 + 3, progress=progress, desc="skills")


def train_lm(model: MistralForCausalLM, seqs: list[list[int]], starts: list[int], pad_id: int, *, batch: int,
             lr: float, epochs: int, prompt_weight: float, micro_batches: int, seed: int, progress: bool = True,
             desc: str = "sft") -> list[float]:
    """Trains in place with AdamW and a cosine schedule; returns the (weighted mean) loss per step.

    Args:
        seqs, starts: `encode_conversations`' token ids and response starts.
        prompt_weight: loss weight of a prompt token relative to a response token.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    steps_per_epoch = math.ceil(len(seqs) / batch)
    total = steps_per_epoch * epochs
    warmup = min(100, max(1, total // 10))
    lengths = [len(s) for s in seqs]
    losses: list[float] = []
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(seqs), generator=g).tolist()
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            # the loss is a weighted mean over the whole batch's targets
            n_targets = sum(prompt_weight * (starts[i] - 1) + lengths[i] - starts[i] for i in idx)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, total, lr, warmup)
            opt.zero_grad(set_to_none=True)
            loss = 0.0
            for chunk in length_sorted_chunks(idx, lengths, micro_batches):
                ids, _ = pad_right([seqs[i] for i in chunk], pad_id)  # [chunk, len]
                weights = token_weights([lengths[i] for i in chunk], [starts[i] for i in chunk], prompt_weight)
                part = lm_loss_sum(model, ids, weights) / n_targets
                part.backward()
                loss += part.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss)
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    bar.close()
    model.eval()
    return losses
