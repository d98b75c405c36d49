"""ProbeScorer: the only door to the model. Conversations, token ids or embeddings → probe scores.

Scoring runs the model in batches, captures the residual stream at the probe's hook point, reads it at the
probe's position and stops the forward there (no later layers, no LM head). The differentiable path
(`score_embeds`) does the same with autograd on, from input embeddings (a one-hot times the embedding matrix
for GCG). When a fluency term is asked for, the forward runs to the end and the mean log-probability of the
searched span comes from the same pass. `sample` draws continuations from the model's own distribution.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded, encode_conversation
from rsearch.errors import RsearchError
from rsearch.hooks import HookPoint, capture, n_layers, parse_hook, run_forward
from rsearch.positions import Position, gather, parse_position, position_weights


@dataclass(frozen=True)
class Scores:
    probe: Tensor            # [n] float32, cpu
    logprob: Tensor | None   # [n] mean log-prob of each row's span, when asked for


def probe_model_mismatch(metadata: dict[str, Any], hidden_size: int, layers: int, model_name: str) -> str | None:
    """Why a probe cannot read this model (a one-line reason), or None when it fits."""
    d = metadata.get("d_model")
    hook = parse_hook(metadata.get("hook", "blocks.0.hook_resid_pre"))
    probe_model = metadata.get("model", "?")
    if d is not None and int(d) != int(hidden_size):
        return (f"probe is for a different model: it reads d_model {d} (trained on {probe_model}), "
                f"but {model_name} has d_model {hidden_size}")
    if hook.layer >= layers:
        return (f"probe is for a different model: its hook {hook.name} (trained on {probe_model}) needs layer "
                f"{hook.layer}, but {model_name} has layers 0..{layers - 1}")
    return None


class ProbeScorer:
    """Scores conversations with a probe at its hook point and position.

    Args:
        probe: a probe module (`probe(x [..., d_model]) -> [...]`), or a path to a probe file.
        model, tokenizer: the model to read; loaded from the probe's metadata (`model`, `revision`) if None.
        metadata: the probe's metadata (hook, position, model, d_model); read from the file for a path.
        device: where a loaded model goes ("auto": cuda if available).
        dtype: dtype of a loaded model.
        batch_size: rows per forward.
        position: overrides the probe's position (e.g. `user_end` to score prompts).
    """

    def __init__(self, probe, model=None, tokenizer=None, *, metadata: dict[str, Any] | None = None,
                 device: str | None = "auto", dtype: str | torch.dtype = "float32", batch_size: int = 32,
                 position: str | Position | None = None):
        if isinstance(probe, (str, Path)):
            from rsearch.probes import load_probe

            probe, file_meta = load_probe(probe)
            metadata = {**file_meta, **(metadata or {})}
        metadata = dict(metadata or {})
        if "hook" not in metadata:
            raise RsearchError("probe metadata has no 'hook': cannot tell where the probe reads the model")
        self.metadata = metadata
        self.hook: HookPoint = parse_hook(metadata["hook"])
        self.position: Position = parse_position(position if position is not None else metadata.get("position", "-1"))
        if model is None:
            name = metadata.get("model")
            if not name:
                raise RsearchError("probe metadata names no model: pass one")
            from rsearch.models import load_model

            model, loaded_tok = load_model(name, dtype=dtype, device=device, revision=metadata.get("revision"))
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise RsearchError("a model given without its tokenizer")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        reason = probe_model_mismatch({"d_model": getattr(probe, "d_model", None), **metadata},
                                      model.config.hidden_size, n_layers(model),
                                      str(getattr(model, "name_or_path", "") or type(model).__name__))
        if reason:
            raise RsearchError(reason)
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.probe = probe.to(self.device).eval()
        self.probe.requires_grad_(False)
        self.batch_size = int(batch_size)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self._allowed: Tensor | None = None

    @classmethod
    def from_file(cls, path: str | Path, model=None, tokenizer=None, **kwargs) -> "ProbeScorer":
        """Loads a probe file (.pt or .safetensors) and the model it names, unless a model is given."""
        return cls(path, model, tokenizer, **kwargs)

    # ----- facts the search needs -----

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def allowed(self) -> Tensor:
        """`[vocab]` bool: real, non-special token ids (what a search may put in a span)."""
        if self._allowed is None:
            from rsearch.targets import allowed_token_mask

            self._allowed = allowed_token_mask(self.tokenizer, self.vocab_size)
        return self._allowed

    def target(self, kind: str, prompt_prefix: str, position: str | Position | None = None):
        """The frame of one search (see rsearch.targets), with this scorer's tokenizer and probe position."""
        from rsearch.targets import make_target

        return make_target(kind, self.tokenizer, prompt_prefix, self.vocab_size, position=position,
                           probe_position=self.position, allowed=self.allowed)

    # ----- scoring -----

    @torch.no_grad()
    def score_rows(self, rows: Sequence[Encoded], position: str | Position | None = None,
                   spans: Sequence[tuple[int, int]] | None = None) -> Scores:
        """Probe scores of tokenized conversations, batched, stopped at the probe's hook.

        Args:
            rows: encoded conversations (see `rsearch.chat`).
            position: where to read; the scorer's position by default.
            spans: `[start, end)` per row; when given, also the mean log-prob of those tokens (full forward).
        """
        pos = parse_position(position) if position is not None else self.position
        probe_out = torch.empty(len(rows))
        lp_out = torch.empty(len(rows)) if spans is not None else None
        for idx in length_sorted_batches(rows, self.batch_size):
            batch = collate([rows[i] for i in idx], self.pad_id)
            weights = position_weights([pos], batch.rows, batch.input_ids.shape[1], batch.left_pad)
            inputs = batch.model_inputs(self.device)
            with capture(self.model, [self.hook], reduce=lambda h: gather(weights, h)[0],
                         stop_early=spans is None) as acts:
                if spans is None:
                    run_forward(self.model, **inputs)
                else:
                    logits = self.model(**inputs, use_cache=False).logits  # [batch, seq, vocab]
            probe_out[idx] = self.probe(acts[self.hook.name]).float().cpu()
            if spans is not None:
                lp_out[idx] = _span_logprob(logits, inputs["input_ids"], [spans[i] for i in idx]).cpu()
        return Scores(probe_out, lp_out)

    def score_ids(self, ids: Sequence[Sequence[int]], position: str | Position = "-1") -> Tensor:
        """Probe scores of raw token id sequences (no template), read at `position` (default the last token)."""
        rows = [Encoded(tuple(x), len(x) - 1, (len(x), len(x))) for x in ids]
        return self.score_rows(rows, position).probe

    def score_texts(self, prompts: Sequence[str], completions: Sequence[str] | None = None,
                    position: str | Position | None = None) -> Tensor:
        """Probe scores of conversations given as text, rendered with the tokenizer's chat template."""
        if completions is not None and len(completions) != len(prompts):
            raise RsearchError(f"{len(prompts)} prompts but {len(completions)} completions")
        rows = [encode_conversation(self.tokenizer, p, None if completions is None else completions[i])
                for i, p in enumerate(prompts)]
        return self.score_rows(rows, position).probe

    @torch.no_grad()
    def span_logprob(self, rows: Sequence[Encoded], spans: Sequence[tuple[int, int]]) -> Tensor:
        """`[n]` mean log-prob of each row's span tokens under the model."""
        out = torch.empty(len(rows))
        for idx in length_sorted_batches(rows, self.batch_size):
            batch = collate([rows[i] for i in idx], self.pad_id)
            inputs = batch.model_inputs(self.device)
            logits = self.model(**inputs, use_cache=False).logits
            out[idx] = _span_logprob(logits, inputs["input_ids"], [spans[i] for i in idx]).cpu()
        return out

    # ----- the differentiable path -----

    @property
    def embedding_matrix(self) -> Tensor:
        """`[vocab, d_model]` input embeddings."""
        return self.model.get_input_embeddings().weight

    def embed(self, ids: Tensor) -> Tensor:
        """`[..., seq]` ids → `[..., seq, d_model]` input embeddings."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def score_embeds(self, embeds: Tensor, rows: Sequence[Encoded], position: str | Position | None = None,
                     span_one_hot: Tensor | None = None, spans: Sequence[tuple[int, int]] | None = None
                     ) -> tuple[Tensor, Tensor | None]:
        """Differentiable probe scores from input embeddings (autograd stays on).

        Args:
            embeds: `[batch, seq, d_model]` input embeddings of unpadded rows of equal length.
            rows: the rows they embed (token ids give the positions; their ids are not read).
            position: where to read; the scorer's position by default.
            span_one_hot: `[batch, span_len, vocab]` one-hot of the span tokens; with `spans`, also returns the
                differentiable mean log-prob of the span (full forward) for a fluency term.
            spans: `[start, end)` of the span in each row.

        Returns:
            (probe scores `[batch]`, mean span log-probs `[batch]` or None).
        """
        pos = parse_position(position) if position is not None else self.position
        b, seq = embeds.shape[:2]
        weights = position_weights([pos], rows, seq, [0] * b)
        mask = torch.ones(b, seq, dtype=torch.long, device=self.device)
        position_ids = torch.arange(seq, device=self.device)[None].expand(b, seq)
        want_lp = span_one_hot is not None and spans is not None
        with capture(self.model, [self.hook], reduce=lambda h: gather(weights, h)[0], stop_early=not want_lp) as acts:
            if want_lp:
                logits = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                    use_cache=False).logits
            else:
                run_forward(self.model, inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids)
        score = self.probe(acts[self.hook.name])
        if not want_lp:
            return score, None
        lps = []
        for i, (a, e) in enumerate(spans):
            logp = torch.log_softmax(logits[i, a - 1:e - 1].float(), -1)  # predictions of the span tokens
            lps.append((span_one_hot[i].to(logp.dtype) * logp).sum(-1).mean())
        return score, torch.stack(lps)

    # ----- sampling from the model's own distribution -----

    @torch.no_grad()
    def sample(self, contexts: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 1.0,
               generator: torch.Generator | None = None, stop_ids: Sequence[int] = (),
               allowed: Tensor | None = None, min_new_tokens: int | Sequence[int] = 1
               ) -> list[tuple[tuple[int, ...], bool]]:
        """Samples continuations of each context from the model (top-k 0, top-p 1: its own distribution).

        Args:
            contexts: token ids to continue (left-padded together).
            max_new_tokens: length cap of each continuation.
            temperature: softmax temperature; 0 is greedy.
            generator: a CPU torch.Generator, for reproducible draws.
            stop_ids: tokens that end a continuation (not included in it).
            allowed: `[vocab]` bool of tokens that may be drawn (stop tokens are always allowed once
                `min_new_tokens` are out); the scorer's `allowed` by default.
            min_new_tokens: tokens drawn before a stop token may end a continuation (one number, or one per
                context).

        Returns:
            per context: (new token ids, whether a stop token ended it).
        """
        if not contexts:
            return []
        allowed = (self.allowed if allowed is None else allowed).clone()
        stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
        n = len(contexts)
        rows = [Encoded(tuple(c), len(c) - 1, (len(c), len(c))) for c in contexts]
        batch = collate(rows, self.pad_id, padding_side="left")
        mask = batch.attention_mask.to(self.device)
        position_ids = batch.position_ids.to(self.device)
        cache_kw = _cache_kwarg(self.model)
        out = self.model(input_ids=batch.input_ids.to(self.device), attention_mask=mask, position_ids=position_ids,
                         use_cache=True)
        past, logits = out[cache_kw], out.logits[:, -1]
        new: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool)
        stopped = [False] * n
        vocab = logits.shape[-1]
        base = torch.full((vocab,), float("-inf"))
        base[: len(allowed)][allowed[:vocab]] = 0.0
        with_stop = base.clone()
        with_stop[stop[stop < vocab]] = 0.0
        min_new = torch.as_tensor([min_new_tokens] * n if isinstance(min_new_tokens, int) else list(min_new_tokens))
        for t in range(max_new_tokens):
            bias = torch.where((t >= min_new)[:, None], with_stop[None], base[None])  # [n, vocab]
            scores = logits.float().cpu() + bias  # [n, vocab]
            if temperature <= 0:
                nxt = scores.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(scores / temperature, -1), 1, generator=generator)[:, 0]
            for i in range(n):
                if done[i]:
                    continue
                tok = int(nxt[i])
                if tok in stop_ids:
                    done[i], stopped[i] = True, True
                else:
                    new[i].append(tok)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            mask = torch.cat([mask, (~done).long().to(self.device)[:, None]], 1)
            position_ids = position_ids[:, -1:] + 1
            out = self.model(input_ids=nxt[:, None].to(self.device), attention_mask=mask, position_ids=position_ids,
                             use_cache=True, **{cache_kw: past})
            past, logits = out[cache_kw], out.logits[:, -1]
        return [(tuple(x), s) for x, s in zip(new, stopped)]


def _cache_kwarg(model) -> str:
    """The KV-cache argument's name: `cache` in transformers ≥ 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _span_logprob(logits: Tensor, input_ids: Tensor, spans: Sequence[tuple[int, int]]) -> Tensor:
    """Mean log-prob of tokens [a, b) of each (right-padded) row: `[batch, seq, vocab]` logits → `[batch]`."""
    out = []
    for i, (a, b) in enumerate(spans):
        if b <= a or a < 1:
            out.append(torch.tensor(0.0, device=logits.device))
            continue
        logp = torch.log_softmax(logits[i, a - 1:b - 1].float(), -1)  # [span, vocab]
        out.append(logp.gather(-1, input_ids[i, a:b, None]).mean())
    return torch.stack(out).float()
