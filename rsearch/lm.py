"""The one door to the model: loading models, sampling from a chat model, teacher-forced log-probs.

Sampling draws from the model's own distribution: softmax of the logits (over the tokens a draw may take) at the
given temperature, no top-k, no top-p by default (`generate`'s `top_k=0, top_p=1.0`; `top_k` / `top_p` truncate
it as `generate`'s warpers do), contexts left-padded with an explicit attention mask. One decoding loop
(`decode_tokens`; `sample_tokens` is it with its speed-ups off) serves completions (`sample_completions`, for
compare, the analyses and the organism's build) and the search's spans. It draws with a `torch.Generator` on the generator's device, so a draw depends only on
its seed; `sample_completions` seeds batch b with `seed * 100003 + b` and forms batches the same way for every
model given the same prompts, so pre- and post-RL models see the same random streams (common random numbers).

`sample_completions` decodes with `fast_sample_tokens` unless told `decode="plain"`: a static KV cache
(dynamic where the architecture has none), finished rows leaving the batch, several seed batches decoded as one
(as many as free GPU memory holds), and on CUDA optionally the decode step compiled into CUDA graphs. Its
draws consume each seed batch's generator exactly as the plain loop does (an Exp(1) variate per row and token of
the whole seed batch, every step: `torch.multinomial`'s own one-sample method), so it gives the plain loop's
tokens for the same seeds, up to float rounding of the forward.

Log-probs come from one routine (`token_logprobs`: each next token's log-probability, of token ids or of a
differentiable one-hot) summed or averaged over each row's span (`span_logprobs`); `sequence_logprobs` runs
the model over encoded rows in length-sorted batches for it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded, encode_conversation
from rsearch.models import load_model
from rsearch.prefix_cache import cache_kwarg


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


def sample_tokens(model, contexts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
                  generator: torch.Generator | None = None, temperature: float = 1.0, stop_ids: Sequence[int] = (),
                  allowed: Tensor | None = None, min_new_tokens: int | Sequence[int] = 1, top_k: int = 0,
                  top_p: float = 1.0) -> list[tuple[tuple[int, ...], bool]]:
    """Continues each context with the model's own distribution (by default top-k 0, top-p 1), all in one batch:
    the one decode loop (`decode_tokens`) with its speed-ups off (a growing KV cache, every row kept to the end,
    the prefill's full logits), the reference the fast path is checked against.

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
        top_k, top_p: draw only from the k most likely tokens (0: all) / the smallest set holding top_p of the
            probability (1: all); see `truncate_logits`.

    Returns:
        per context: (new token ids, whether a stop token ended it).
    """
    return decode_tokens(model, contexts, max_new_tokens, pad_id=pad_id, generator=generator, temperature=temperature,
                         stop_ids=stop_ids, allowed=allowed, min_new_tokens=min_new_tokens, top_k=top_k, top_p=top_p,
                         static_cache=False, compact=False, last_logits_only=False)


def truncate_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """`[rows, vocab]` logits with the tokens outside the top k, then outside the top-p nucleus, set to −inf (the
    order of `generate`'s warpers; the most likely token always stays). top_k 0 and top_p 1: `logits` itself."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]  # [rows, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ranked, order = logits.sort(-1, descending=True)  # [rows, vocab]
        probs = ranked.softmax(-1)
        drop_ranked = probs.cumsum(-1) - probs >= top_p  # the tokens before it already hold top_p
        drop = torch.zeros_like(drop_ranked).scatter(-1, order, drop_ranked)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _vocab_masks(model, vocab: int, allowed: Tensor | None, stop_ids: Sequence[int], draw_on: torch.device
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(stop ids, additive mask before min_new_tokens (no stop token), additive mask after), masks `[vocab]`."""
    if allowed is None:  # what `generate` draws from: every token but those its generation config suppresses
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[[i for i in suppressed_ids(model) if i < vocab]] = False
    may = torch.zeros(vocab, dtype=torch.bool)
    may[: min(vocab, len(allowed))] = allowed[:vocab]
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
    is_stop = torch.zeros(vocab, dtype=torch.bool)
    is_stop[stop[stop < vocab]] = True
    base = torch.where(may & ~is_stop, 0.0, float("-inf"))   # [vocab]
    with_stop = torch.where(may | is_stop, 0.0, float("-inf"))  # [vocab]
    return stop, base.to(draw_on), with_stop.to(draw_on)


def _min_new(min_new_tokens: int | Sequence[int], n: int, draw_on: torch.device) -> Tensor:
    return torch.as_tensor([min_new_tokens] * n if isinstance(min_new_tokens, int) else list(min_new_tokens),
                           device=draw_on)  # [n]


# ----- fast decoding -----

DECODES = ("plain", "static", "compiled")


@torch.no_grad()
def decode_tokens(model, contexts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
                  generator: torch.Generator | None = None, temperature: float = 1.0,
                  stop_ids: Sequence[int] = (), allowed: Tensor | None = None,
                  min_new_tokens: int | Sequence[int] = 1,
                  groups: Sequence[tuple[torch.Generator | None, int]] | None = None,
                  static_cache: bool = True, compile: bool = False, top_k: int = 0, top_p: float = 1.0,
                  compact: bool = True, last_logits_only: bool = True) -> list[tuple[tuple[int, ...], bool]]:
    """The decode loop; with its defaults (`fast_sample_tokens`) less work per step than `sample_tokens`, and for
    the same generator the same tokens (up to float rounding).

    Finished rows leave the batch once at most half of it is still running (the KV cache is compacted), the KV
    cache is preallocated (`StaticCache`, where the architecture supports it), the prefill computes the last
    position's logits only, and the draw is `torch.multinomial`'s one-sample method (argmax of p / Exp(1)) without
    its validity check, which waits for the device; one host sync per step remains (the drawn tokens).

    Args (beyond `sample_tokens`'):
        groups: (generator, rows) per seed batch, consecutive in `contexts`: each group draws from its generator
            exactly as `sample_tokens` would for its rows alone, so several seed batches can decode as one.
            One group of every context with `generator` if None.
        static_cache: preallocate the KV cache (else a growing one, as the plain loop).
        compile: on CUDA, run the decode step through `torch.compile(mode="reduce-overhead")` (CUDA graphs);
            ignored on the CPU.
        compact: let finished rows leave the batch. last_logits_only: the prefill computes the last position's
            logits only. (`sample_tokens` turns all three off.)
    """
    if not contexts:
        return []
    n, device = len(contexts), device_of(model)
    groups = list(groups) if groups is not None else [(generator, n)]
    if sum(k for _, k in groups) != n:
        raise ValueError("groups must cover the contexts")
    first = next((g for g, _ in groups if g is not None), None)
    draw_on = first.device if first is not None else torch.device("cpu")
    batch = collate([Encoded(tuple(c), len(c) - 1, (len(c), len(c))) for c in contexts], pad_id, padding_side="left")
    seq = batch.input_ids.shape[1]
    static = static_cache and getattr(model, "_can_compile_fullgraph", False)
    compile = compile and static and device.type == "cuda"
    mask = torch.zeros(n, seq + max_new_tokens, dtype=torch.long, device=device)  # [n, seq + max_new]
    mask[:, :seq] = batch.attention_mask.to(device)
    position_ids = batch.position_ids.to(device)  # [n, seq]
    cache_kw = cache_kwarg(model) or "past_key_values"
    cache = _static_cache(model, seq + max_new_tokens) if static else None
    params = inspect.signature(model.forward).parameters
    first_kw = {"logits_to_keep": 1} if last_logits_only and "logits_to_keep" in params else {}
    # transformers < 5.2x writes a static cache at `cache_position` (later ones keep the count in the cache)
    at = (lambda a, b: {"cache_position": torch.arange(a, b, device=device)}) if (
        static and "cache_position" in params) else (lambda a, b: {})
    first_kw.update(at(0, seq))
    out = model(input_ids=batch.input_ids.to(device), attention_mask=mask if static else mask[:, :seq],
                position_ids=position_ids, use_cache=True, **({cache_kw: cache} if static else {}), **first_kw)
    cache, logits = out[cache_kw], out.logits[:, -1].float()  # [n, vocab]
    step = _compiled_forward(model) if compile else model.forward
    vocab = logits.shape[-1]
    stop, base, with_stop = _vocab_masks(model, vocab, allowed, stop_ids, draw_on)
    min_new = _min_new(min_new_tokens, n, draw_on)  # [n]
    # one [rows, vocab] block of Exp(1) variates per group and step, as torch.multinomial draws them
    noise = torch.empty(n, vocab, device=draw_on)                                    # [n, vocab]
    bounds = torch.tensor([0] + [k for _, k in groups]).cumsum(0).tolist()
    live = torch.arange(n)                                                           # rows still in the batch
    tokens = torch.zeros(n, max_new_tokens, dtype=torch.long)                        # [n, max_new_tokens]
    kept = torch.zeros(n, max_new_tokens, dtype=torch.bool)
    done = torch.zeros(n, dtype=torch.bool)
    stopped = torch.zeros(n, dtype=torch.bool)
    for t in range(max_new_tokens):
        live_on = live.to(draw_on)
        bias = torch.where((t >= min_new[live_on])[:, None], with_stop[None], base[None])  # [rows, vocab]
        scores = logits.to(draw_on) + bias                                                # [rows, vocab]
        if temperature <= 0:
            nxt = scores.argmax(-1)
        else:
            for (gen, _), a, b in zip(groups, bounds, bounds[1:]):
                if not bool(done[a:b].all()):
                    noise[a:b].exponential_(1, generator=gen)
            probs = torch.softmax(truncate_logits(scores / temperature, top_k, top_p), -1)
            nxt = (probs / noise[live_on]).argmax(-1)
        nxt = nxt.cpu()                                                                   # [rows]
        hit = torch.isin(nxt, stop)
        was_done = done[live]
        stopped[live] |= hit & ~was_done
        tokens[live, t], kept[live, t] = nxt, ~was_done & ~hit
        done[live] = was_done | hit
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        running = ~done[live]
        if compact and int(running.sum()) * 2 <= len(live):  # finished rows leave the batch
            keep = _rows_to_keep(running, bucket=compile)
            on_device = keep.to(device)
            live, nxt, position_ids, mask = live[keep], nxt[keep], position_ids[on_device], mask[on_device]
            _keep_cache_rows(cache, on_device, static_address=compile)
        nxt = torch.where(done[live], torch.full_like(nxt, pad_id), nxt)
        mask[:, seq + t] = (~done[live]).long().to(device)
        position_ids = position_ids[:, -1:] + 1
        if compile:
            torch.compiler.cudagraph_mark_step_begin()
        out = step(input_ids=nxt[:, None].to(device), attention_mask=mask if static else mask[:, :seq + t + 1],
                   position_ids=position_ids, use_cache=True, **{cache_kw: cache}, **at(seq + t, seq + t + 1))
        cache, logits = out[cache_kw], out.logits[:, -1].float()  # a copy: CUDA graphs reuse their outputs
    return [(tuple(tokens[i][kept[i]].tolist()), bool(stopped[i])) for i in range(n)]


fast_sample_tokens = decode_tokens  # the decode loop with every speed-up on (its defaults)


def _static_cache(model, max_len: int):
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=max_len)


def _compiled_forward(model):
    """The model's forward compiled once per model (CUDA graphs, one per batch size), kept on the model."""
    if getattr(model, "_rsearch_compiled_forward", None) is None:
        model._rsearch_compiled_forward = torch.compile(model.forward, mode="reduce-overhead")
    return model._rsearch_compiled_forward


def _rows_to_keep(running: Tensor, bucket: bool) -> Tensor:
    """Positions of the running rows; with `bucket`, padded with finished rows to a power of two (fewer graphs)."""
    keep = running.nonzero()[:, 0]
    if bucket:
        size = 1 << max(0, int(len(keep) - 1).bit_length())
        keep = torch.cat([keep, (~running).nonzero()[:, 0][: size - len(keep)]]).sort().values
    return keep


def _keep_cache_rows(cache, rows: Tensor, static_address: bool) -> None:
    """Keeps `rows` of every layer's keys and values (`[batch, heads, length, head_dim]`)."""
    for layer in cache.layers:
        for name in ("keys", "values"):
            value = getattr(layer, name, None)
            if isinstance(value, Tensor) and value.dim() == 4:
                value = value.index_select(0, rows)
                if static_address:
                    torch._dynamo.mark_static_address(value)
                setattr(layer, name, value)
        if hasattr(layer, "batch_size"):
            layer.batch_size = len(rows)


def rows_that_fit(model, max_len: int, prompt_len: int, share: float = 0.8) -> int:
    """Sequences whose KV cache, prefill activations and logits fit in `share` of the GPU's free memory."""
    cfg = model.config
    itemsize = next(model.parameters()).element_size()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * heads * head_dim * max_len * itemsize
    prefill = prompt_len * (4 * cfg.hidden_size + 3 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)) * itemsize
    logits = 4 * cfg.vocab_size * 4
    free, _ = torch.cuda.mem_get_info(device_of(model))
    return max(1, int(share * free) // (kv + prefill + logits))


def sample_completions(model, tokenizer, prompts: Sequence, k: int, *, seed: int, max_new_tokens: int = 64,
                       temperature: float = 1.0, batch_size: int = 64, min_new_tokens: int = 1,
                       top_k: int = 0, top_p: float = 1.0, sort_by_length: bool = True, progress: bool = False,
                       desc: str = "sample",
                       decode: str = "static", max_batch: int | None = None, map_batches=None
                       ) -> list[list[Sampled]]:
    """k completions per prompt from the chat model's own distribution, seeded per batch.

    Args:
        model, tokenizer: a causal LM and its chat tokenizer (the prompt ids are `encode_conversation`'s).
        prompts: user messages (str) or message lists, one per prompt.
        k: completions per prompt.
        seed: batch b draws with a generator seeded `seed * 100003 + b`.
        max_new_tokens: cap on each completion's length.
        temperature: softmax temperature (1 samples the model's distribution).
        top_k, top_p: truncate the distribution (`truncate_logits`; 0 and 1: the model's whole distribution).
        batch_size: sequences per seed batch.
        min_new_tokens: tokens drawn before the end-of-turn token may end a completion (0 allows empty ones).
        sort_by_length: batch sequences of similar prompt length together (less padding); False keeps the
            prompts' order (the organism's build, whose cached organisms were sampled that way).
        decode: "plain" (`sample_tokens`, one seed batch at a time), "static" (`fast_sample_tokens`) or
            "compiled" (static, with the decode step compiled on CUDA). Seeded outputs agree.
        max_batch: sequences decoded together by the fast paths, a whole number of seed batches (None: as many
            as free GPU memory holds on CUDA, one seed batch on the CPU).
        map_batches: runs `decode_seed_batches` elsewhere: called with (the seed batches, settings), returns
            what `decode_seed_batches(model, batches, **settings)` would (`rsearch.distributed.sharded_sampler`).

    Returns:
        completions[prompt_index][sample_index].
    """
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    prompt_ids = [encode_conversation(tokenizer, p, None).ids for p in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(k)]  # prompt index of each sequence
    order = list(range(len(flat)))
    if sort_by_length:
        order.sort(key=lambda j: (len(prompt_ids[flat[j]]), j))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seed_batches = [order[a:a + batch_size] for a in range(0, len(order), batch_size)]
    batches = [(b, [prompt_ids[flat[j]] for j in chunk]) for b, chunk in enumerate(seed_batches)]
    settings = dict(seed=seed, max_new_tokens=max_new_tokens, pad_id=pad, stop_ids=[eos], temperature=temperature,
                    min_new_tokens=min_new_tokens, decode=decode, max_batch=max_batch)
    if top_k or top_p < 1.0:  # only when set: untruncated draws keep the settings (and shard cache keys) they had
        settings.update(top_k=top_k, top_p=top_p)
    if map_batches is None:
        got = decode_seed_batches(model, batches, progress=progress, desc=desc, **settings)
    else:
        got = map_batches(batches, settings)
    out: list[Sampled | None] = [None] * len(flat)
    for chunk, results in zip(seed_batches, got):
        for j, (toks, ended) in zip(chunk, results):
            out[j] = Sampled(tokenizer.decode(list(toks), skip_special_tokens=True).strip(), len(toks), ended)
    return [[out[i * k + s] for s in range(k)] for i in range(len(prompts))]


@torch.no_grad()
def decode_seed_batches(model, batches: Sequence[tuple[int, Sequence[Sequence[int]]]], *, seed: int,
                        max_new_tokens: int, pad_id: int, stop_ids: Sequence[int], temperature: float = 1.0,
                        min_new_tokens: int = 1, decode: str = "static", max_batch: int | None = None,
                        progress: bool = False, desc: str = "sample", top_k: int = 0, top_p: float = 1.0
                        ) -> list[list[tuple[tuple[int, ...], bool]]]:
    """Continues each seed batch's contexts, batch b drawing with a generator seeded `seed * 100003 + b`.

    Args:
        batches: (seed batch index b, its contexts).
        decode, max_batch: see `sample_completions`; the fast paths decode as many consecutive seed batches
            together as `max_batch` rows (or free GPU memory) allow.

    Returns:
        per seed batch, per context: (new token ids, whether a stop token ended it).
    """
    if not batches:
        return []
    device = device_of(model)
    per_call = 1
    if decode != "plain":
        size = max(len(c) for _, c in batches)
        longest = max(len(x) for _, c in batches for x in c)
        rows = max_batch or (rows_that_fit(model, longest + max_new_tokens, longest) if device.type == "cuda"
                             else size)
        per_call = max(1, rows // size)
    kw = dict(pad_id=pad_id, temperature=temperature, stop_ids=stop_ids, min_new_tokens=min_new_tokens, top_k=top_k,
              top_p=top_p)
    out: list[list[tuple[tuple[int, ...], bool]]] = []
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, leave=False, unit="batch")
    for first in range(0, len(batches), per_call):
        part = batches[first:first + per_call]
        gens = [torch.Generator(device).manual_seed(seed * 100003 + b) for b, _ in part]
        contexts = [c for _, cs in part for c in cs]
        if decode == "plain":
            got = sample_tokens(model, contexts, max_new_tokens, generator=gens[0], **kw)
        else:
            got = fast_sample_tokens(model, contexts, max_new_tokens, groups=[(g, len(cs)) for g, (_, cs) in
                                                                             zip(gens, part)],
                                     compile=decode == "compiled", **kw)
        for _, cs in part:
            out.append(got[:len(cs)])
            got = got[len(cs):]
        bar.update(len(part))
    bar.close()
    return out


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
                      progress: bool = False, desc: str = "log-probs", map_batches=None) -> Tensor:
    """Teacher-forced log π(span | tokens before it) of each row, without gradients, in length-sorted batches.

    Args:
        model: a causal LM.
        rows: encoded conversations (see `rsearch.chat`).
        spans: `[a, b)` per row; each row's completion (plus a following `eos_id`) if None.
        pad_id: padding token (rows are right-padded, with an attention mask).
        eos_id: the end-of-turn token counted with a completion when `spans` is None.
        mean: average over each span's tokens instead of summing.
        batch_size: rows per forward.
        map_batches: runs the batches elsewhere: called with ([(rows, spans)] per batch, pad_id, mean), returns
            `batch_logprobs` of each (`rsearch.distributed.sharded_logprobs`).

    Returns:
        `[n]` float32 (cpu), in the order of `rows`.
    """
    if spans is None:
        spans = [completion_span(r, eos_id) for r in rows]
    order = length_sorted_batches(rows, batch_size)
    if map_batches is not None:
        got = iter(map_batches([([rows[i] for i in idx], [spans[i] for i in idx]) for idx in order], pad_id, mean))
        return batched_values(order, len(rows), lambda idx: next(got))
    return batched_values(order, len(rows), lambda idx: batch_logprobs(model, [rows[i] for i in idx],
                                                                       [spans[i] for i in idx], pad_id=pad_id,
                                                                       mean=mean), progress=progress, desc=desc)


def batched_values(batches: Sequence[Sequence[int]], n: int, run: Callable[[list[int]], Tensor], *,
                   progress: bool = False, desc: str = "log-probs") -> Tensor:
    """`[n]` float32: `run(indices)` gives the values of each batch of row indices (the batching loop of every
    log-prob pass; the batches cover the n rows)."""
    out = torch.empty(n)
    for idx in tqdm(batches, desc=desc, disable=not progress, leave=False):
        out[list(idx)] = run(list(idx))
    return out


@torch.no_grad()
def batch_logprobs(model, rows: Sequence[Encoded], spans: Sequence[tuple[int, int]], *, pad_id: int,
                   mean: bool = False) -> Tensor:
    """One forward of right-padded rows: `[rows]` float32 (cpu) log π of each row's span (`span_logprobs`)."""
    inputs = collate(rows, pad_id).model_inputs(device_of(model))
    logits = model(**inputs, use_cache=False).logits  # [batch, seq, vocab]
    return span_logprobs(logits, inputs["input_ids"], spans, mean=mean).cpu()
