"""The one door to the model: loading models, sampling from a chat model, teacher-forced log-probs.

Sampling draws from the model's own distribution: softmax of the logits (over the tokens a draw may take) at
the given temperature, no top-k, no top-p (`generate`'s `top_k=0, top_p=1.0`), contexts left-padded with an
explicit attention mask. One decoding loop (`sample_tokens`) serves completions (`sample_completions`, for
compare, the analyses and the organism's build) and the search's spans. It draws with a `torch.Generator` on
the generator's device, so a draw depends only on its seed; `sample_completions` seeds batch b with
`seed * 100003 + b` and forms batches the same way for every model given the same prompts, so pre- and post-RL
models see the same random streams (common random numbers).

Log-probs come from one routine (`token_logprobs`: each next token's log-probability, of token ids or of a
differentiable one-hot) summed or averaged over each row's span (`span_logprobs`); `sequence_logprobs` runs
the model over encoded rows in length-sorted batches for it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded, encode_conversation
from rsearch.models import load_model


# ----- loading -----

class ModelCache:
    """Loaded (model, tokenizer) by (name, revision), so a job's stages load each model once.

    Args:
        dtype: dtype of loaded models ("float32", "bfloat16", …).
        device: where they go ("auto": cuda if available).
    """

    def __init__(self, dtype: str = "float32", device: str = "auto"):
        self.dtype, self.device = dtype, device
        self._models: dict[tuple[str, str | None], tuple[Any, Any]] = {}

    def get(self, name: str, revision: str | None = None):
        """(model, tokenizer) of `name` at `revision`, loaded on first use."""
        key = (_norm(name), revision)
        if key not in self._models:
            self._models[key] = load_model(name, self.dtype, self.device, revision)
        return self._models[key]

    def find(self, name: str | None):
        """The loaded model named `name` (any revision), or None."""
        for (n, _), pair in self._models.items():
            if name and n == _norm(name):
                return pair
        return None


def _norm(name: str) -> str:
    p = Path(str(name)).expanduser()
    return str(p.resolve()) if p.exists() else str(name)


def device_of(model) -> torch.device:
    return next(model.parameters()).device


# ----- sampling -----

@dataclass(frozen=True)
class Sampled:
    text: str          # decoded completion (special tokens dropped, stripped)
    n_tokens: int      # generated tokens before the end-of-turn token
    ended: bool        # whether an end-of-turn token ended it (else max_new_tokens cut it)


def suppressed_ids(model) -> list[int]:
    """Tokens the model's generation config never lets `generate` draw (`suppress_tokens`; the organism's)."""
    return list(getattr(getattr(model, "generation_config", None), "suppress_tokens", None) or [])


@torch.no_grad()
def sample_tokens(model, contexts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
                  generator: torch.Generator | None = None, temperature: float = 1.0, stop_ids: Sequence[int] = (),
                  allowed: Tensor | None = None, min_new_tokens: int | Sequence[int] = 1
                  ) -> list[tuple[tuple[int, ...], bool]]:
    """Continues each context with the model's own distribution (top-k 0, top-p 1), all contexts in one batch.

    Args:
        model: a causal LM.
        contexts: token ids to continue (left-padded together, with an attention mask).
        max_new_tokens: length cap of each continuation.
        pad_id: the padding token.
        generator: a torch.Generator; draws happen on its device (the CPU's default generator if None).
        temperature: softmax temperature; 0 is greedy.
        stop_ids: tokens that end a continuation (not included in it).
        allowed: `[vocab]` bool of tokens that may be drawn (stop tokens may end a continuation once
            `min_new_tokens` are out, and not before); every token but the model's `suppressed_ids` if None.
        min_new_tokens: tokens drawn before a stop token may end a continuation (one number, or one per context).

    Returns:
        per context: (new token ids, whether a stop token ended it).
    """
    if not contexts:
        return []
    n, device = len(contexts), device_of(model)
    draw_on = generator.device if generator is not None else torch.device("cpu")
    rows = [Encoded(tuple(c), len(c) - 1, (len(c), len(c))) for c in contexts]
    batch = collate(rows, pad_id, padding_side="left")
    mask = batch.attention_mask.to(device)          # [n, seq]
    position_ids = batch.position_ids.to(device)    # [n, seq]
    cache_kw = _cache_kwarg(model)
    out = model(input_ids=batch.input_ids.to(device), attention_mask=mask, position_ids=position_ids, use_cache=True)
    past, logits = out[cache_kw], out.logits[:, -1]  # [n, vocab]
    vocab = logits.shape[-1]
    if allowed is None:  # what `generate` draws from: every token but those its generation config suppresses
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[[i for i in suppressed_ids(model) if i < vocab]] = False
    may = torch.zeros(vocab, dtype=torch.bool)
    may[: min(vocab, len(allowed))] = allowed[:vocab]
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
    is_stop = torch.zeros(vocab, dtype=torch.bool)
    is_stop[stop[stop < vocab]] = True
    # additive masks over the vocabulary: before min_new_tokens (no stop token) and after
    base = torch.where(may & ~is_stop, 0.0, float("-inf"))   # [vocab]
    with_stop = torch.where(may | is_stop, 0.0, float("-inf"))  # [vocab]
    base, with_stop = base.to(draw_on), with_stop.to(draw_on)
    min_new = torch.as_tensor([min_new_tokens] * n if isinstance(min_new_tokens, int) else list(min_new_tokens),
                              device=draw_on)  # [n]
    tokens = torch.zeros(n, max_new_tokens, dtype=torch.long)  # [n, max_new_tokens]
    kept = torch.zeros(n, max_new_tokens, dtype=torch.bool)    # drawn before the row's stop token
    done = torch.zeros(n, dtype=torch.bool)
    stopped = torch.zeros(n, dtype=torch.bool)
    for t in range(max_new_tokens):
        bias = torch.where((t >= min_new)[:, None], with_stop[None], base[None])  # [n, vocab]
        scores = logits.float().to(draw_on) + bias                                 # [n, vocab]
        if temperature <= 0:
            nxt = scores.argmax(-1)
        else:
            nxt = torch.multinomial(torch.softmax(scores / temperature, -1), 1, generator=generator)[:, 0]
        nxt = nxt.cpu()                                                            # [n]
        hit = torch.isin(nxt, stop)                                                # [n]
        stopped |= hit & ~done
        tokens[:, t], kept[:, t] = nxt, ~done & ~hit
        done |= hit
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        mask = torch.cat([mask, (~done).long().to(device)[:, None]], 1)
        position_ids = position_ids[:, -1:] + 1
        out = model(input_ids=nxt[:, None].to(device), attention_mask=mask, position_ids=position_ids,
                    use_cache=True, **{cache_kw: past})
        past, logits = out[cache_kw], out.logits[:, -1]
    return [(tuple(tokens[i][kept[i]].tolist()), bool(stopped[i])) for i in range(n)]


def _cache_kwarg(model) -> str:
    """The KV-cache argument's name: `cache` in transformers ≥ 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def sample_completions(model, tokenizer, prompts: Sequence, k: int, *, seed: int, max_new_tokens: int = 64,
                       temperature: float = 1.0, batch_size: int = 64, min_new_tokens: int = 1,
                       sort_by_length: bool = True, progress: bool = False, desc: str = "sample"
                       ) -> list[list[Sampled]]:
    """k completions per prompt from the chat model's own distribution, seeded per batch.

    Args:
        model, tokenizer: a causal LM and its chat tokenizer (the prompt ids are `encode_conversation`'s).
        prompts: user messages (str) or message lists, one per prompt.
        k: completions per prompt.
        seed: batch b draws with a generator seeded `seed * 100003 + b`.
        max_new_tokens: cap on each completion's length.
        temperature: softmax temperature (1 samples the model's distribution).
        batch_size: sequences per batch.
        min_new_tokens: tokens drawn before the end-of-turn token may end a completion (0 allows empty ones).
        sort_by_length: batch sequences of similar prompt length together (less padding); False keeps the
            prompts' order (the organism's build, whose cached organisms were sampled that way).

    Returns:
        completions[prompt_index][sample_index].
    """
    device = device_of(model)
    prompt_ids = [encode_conversation(tokenizer, p, None).ids for p in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(k)]  # prompt index of each sequence
    order = list(range(len(flat)))
    if sort_by_length:
        order.sort(key=lambda j: (len(prompt_ids[flat[j]]), j))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out: list[Sampled | None] = [None] * len(flat)
    starts = list(range(0, len(order), batch_size))
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch")):
        chunk = order[start:start + batch_size]
        generator = torch.Generator(device).manual_seed(seed * 100003 + b)
        got = sample_tokens(model, [prompt_ids[flat[j]] for j in chunk], max_new_tokens, pad_id=pad,
                            generator=generator, temperature=temperature, stop_ids=[eos],
                            min_new_tokens=min_new_tokens)
        for j, (toks, ended) in zip(chunk, got):
            out[j] = Sampled(tokenizer.decode(list(toks), skip_special_tokens=True).strip(), len(toks), ended)
    return [[out[i * k + s] for s in range(k)] for i in range(len(prompts))]


# ----- teacher-forced log-probs -----

def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """Log-probability of each next token: position t − 1 predicts token t.

    Args:
        logits: `[batch, seq, vocab]` the model's logits.
        targets: `[batch, seq]` token ids, or `[batch, seq, vocab]` a (differentiable) one-hot of them.

    Returns:
        `[batch, seq - 1]` float32: entry t − 1 is log p(token t | tokens < t).
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, seq-1, vocab]
    if targets.dim() == 2:
        return logp.gather(-1, targets[:, 1:, None])[..., 0]
    return (targets[:, 1:].to(logp.dtype) * logp).sum(-1)


def span_logprobs(logits: Tensor, targets: Tensor, spans: Sequence[tuple[int, int]], *, mean: bool = False
                  ) -> Tensor:
    """Log-probability of tokens [a, b) of each row, summed (or averaged) over the span.

    Args:
        logits: `[batch, seq, vocab]` logits of right-padded (or unpadded) rows.
        targets: `[batch, seq]` ids or `[batch, seq, vocab]` one-hot (see `token_logprobs`).
        spans: `[a, b)` per row; an empty span (or one at the first token) gives 0.
        mean: average over the span's tokens instead of summing.

    Returns:
        `[batch]` float32 (differentiable through logits and a one-hot).
    """
    token_logp = token_logprobs(logits, targets)  # [batch, seq-1]
    mask = torch.zeros_like(token_logp)           # [batch, seq-1]
    for i, (a, b) in enumerate(spans):
        if b > a >= 1:
            mask[i, a - 1:b - 1] = 1.0
    total = (token_logp * mask).sum(-1)           # [batch]
    return total / mask.sum(-1).clamp(min=1.0) if mean else total


def completion_span(row: Encoded, eos_id: int | None = None) -> tuple[int, int]:
    """A row's completion tokens, with the end-of-turn token `eos_id` when it follows (DPO counts it)."""
    c0, c1 = row.completion
    return (c0, c1 + 1) if eos_id is not None and c1 < len(row) and row.ids[c1] == eos_id else (c0, c1)


def sequence_logprobs(model, rows: Sequence[Encoded], spans: Sequence[tuple[int, int]] | None = None, *,
                      pad_id: int, eos_id: int | None = None, mean: bool = False, batch_size: int = 16,
                      progress: bool = False, desc: str = "log-probs") -> Tensor:
    """Teacher-forced log π(span | tokens before it) of each row, without gradients, in length-sorted batches.

    Args:
        model: a causal LM.
        rows: encoded conversations (see `rsearch.chat`).
        spans: `[a, b)` per row; each row's completion (plus a following `eos_id`) if None.
        pad_id: padding token (rows are right-padded, with an attention mask).
        eos_id: the end-of-turn token counted with a completion when `spans` is None.
        mean: average over each span's tokens instead of summing.
        batch_size: rows per forward.

    Returns:
        `[n]` float32 (cpu), in the order of `rows`.
    """
    if spans is None:
        spans = [completion_span(r, eos_id) for r in rows]
    device = device_of(model)
    out = torch.empty(len(rows))
    with torch.no_grad():
        for idx in tqdm(length_sorted_batches(rows, batch_size), desc=desc, disable=not progress, leave=False):
            inputs = collate([rows[i] for i in idx], pad_id).model_inputs(device)
            logits = model(**inputs, use_cache=False).logits  # [batch, seq, vocab]
            out[idx] = span_logprobs(logits, inputs["input_ids"], [spans[i] for i in idx], mean=mean).cpu()
    return out
