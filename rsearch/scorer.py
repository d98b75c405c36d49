"""ProbeScorer: probe scores through the model. Conversations, token ids or embeddings → probe scores.

Scoring runs the model in batches, captures the residual stream at the probe's hook point, reads it at the
probe's position and stops the forward there (no later layers, no LM head). The differentiable path
(`score_embeds`) does the same with autograd on, from input embeddings; `span_gradient` gives GCG the objective's
gradient with respect to a span's one-hot, taken at exactly the embeddings the model scores: those its own input
embedding module computes from the ids, with any scale it applies (Gemma-2 multiplies by √d_model inside it), so
the gradient path and the scored path read the same numbers on every architecture. When a fluency term is
asked for, the forward runs to the end and the mean log-probability of the searched span comes from the same
pass. Loading, sampling and log-prob arithmetic are `rsearch.lm`'s (the door to the model this builds on).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded, encode_conversation
from rsearch.errors import RsearchError
from rsearch.hooks import HookPoint, capture, n_layers, parse_hook, run_forward
from rsearch.lm import sequence_logprobs, span_logprobs
from rsearch.models import load_model
from rsearch.positions import Position, gather, parse_position, position_weights
from rsearch.prefix_cache import PrefixCache, cache_kwarg, shared_length
from rsearch.probes import load_probe
from rsearch.targets import Target, allowed_token_mask, make_target


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
        # rows that open alike (a search's candidates, a template's system message) share one prefix forward;
        # off for models without a transformers cache, and for a caller that edits the residual per position
        self.share_prefix = cache_kwarg(model) is not None

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
            self._allowed = allowed_token_mask(self.tokenizer, self.vocab_size)
        return self._allowed

    def target(self, kind: str, prompt_prefix: str, position: str | Position | None = None) -> Target:
        """The frame of one search (see rsearch.targets), with this scorer's tokenizer and probe position."""
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
        if not rows:
            return Scores(probe_out, lp_out)
        everything = collate(rows, self.pad_id)
        shared = shared_length(rows, position_weights([pos], rows, everything.input_ids.shape[1],
                                                      everything.left_pad), spans) if self.share_prefix else 0
        prefix = PrefixCache(self.model, rows[0].ids[:shared]) if shared else None
        # not lm.sequence_logprobs: one forward reads both the probe's activations and the logits
        for idx in length_sorted_batches(rows, self.batch_size):
            batch = collate([rows[i] for i in idx], self.pad_id)
            weights = position_weights([pos], batch.rows, batch.input_ids.shape[1], batch.left_pad)[..., shared:]
            inputs = batch.model_inputs(self.device)
            if prefix is not None:
                inputs = prefix.inputs(inputs)  # the tokens after the shared prefix: [batch, seq - shared]
            with capture(self.model, [self.hook], reduce=lambda h: gather(weights, h)[0],
                         stop_early=spans is None) as acts:
                if spans is None:
                    run_forward(self.model, **inputs)
                else:
                    logits = self.model(**{"use_cache": False, **inputs}).logits  # [batch, seq - shared, vocab]
            probe_out[idx] = self.probe(acts[self.hook.name]).float().cpu()
            if spans is not None:
                lp_out[idx] = span_logprobs(logits, inputs["input_ids"], [(a - shared, b - shared) for a, b in (
                    spans[i] for i in idx)], mean=True).cpu()
        return Scores(probe_out, lp_out)

    def score_texts(self, prompts: Sequence[str], completions: Sequence[str] | None = None,
                    position: str | Position | None = None) -> Tensor:
        """Probe scores of conversations given as text, rendered with the tokenizer's chat template."""
        if completions is not None and len(completions) != len(prompts):
            raise RsearchError(f"{len(prompts)} prompts but {len(completions)} completions")
        rows = [encode_conversation(self.tokenizer, p, None if completions is None else completions[i])
                for i, p in enumerate(prompts)]
        return self.score_rows(rows, position).probe

    def span_logprob(self, rows: Sequence[Encoded], spans: Sequence[tuple[int, int]]) -> Tensor:
        """`[n]` mean log-prob of each row's span tokens under the model."""
        return sequence_logprobs(self.model, rows, spans, pad_id=self.pad_id, mean=True, batch_size=self.batch_size)

    # ----- the differentiable path -----

    def embed(self, ids: Tensor) -> Tensor:
        """`[..., seq]` ids → `[..., seq, d_model]` input embeddings, through the model's own embedding module."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def span_embeds(self, target: Target, span_ids: Sequence[int]) -> Tensor:
        """`[1, seq, d_model]`: the input embeddings of `target.row(span_ids)` as the model computes them from its
        ids (the point where `span_gradient` differentiates)."""
        ids = list(target.prefix_ids) + [int(i) for i in span_ids] + list(target.suffix_ids)
        return self.embed(torch.tensor(ids, dtype=torch.long))[None]

    def embedding_vjp(self, grad: Tensor, chunk: int = 8192) -> Tensor:
        """`[n, d_model]` ∂f/∂(input embeddings) → `[n, vocab]` ∂f/∂(one-hot), float32.

        With e = Σ_v one_hot[v] · E[v], where E[v] is the embedding module's output for token v (scale and all),
        the chain rule gives grad @ Eᵀ; E is computed chunk by chunk over the vocabulary, never held whole.
        """
        grad = grad.float()
        out = torch.empty(grad.shape[0], self.vocab_size, device=grad.device)
        for ids in torch.arange(self.vocab_size, device=self.device).split(chunk):
            out[:, ids] = grad @ self.embed(ids).float().T                      # [n, chunk]
        return out

    def span_gradient(self, target: Target, span_ids: Sequence[int], logprob_weight: float = 0.0) -> Tensor:
        """∂ objective / ∂ one-hot of the span, `[span, vocab]` float32 (cpu), through the model to the probe.

        The objective is the probe score at the target's position, + `logprob_weight` × the span's mean
        log-prob (then the forward runs to the logits). It is differentiated at `span_embeds` (what the model
        scores), and the one-hot's gradient is taken through the embedding module (`embedding_vjp`); with a
        fluency term, the span's one-hot also enters as the log-prob's targets.

        Args:
            target: the search's frame (tokens around the span, where the probe reads).
            span_ids: the current span.
            logprob_weight: weight of the fluency term; 0 stops the forward at the probe's hook.
        """
        span_ids = [int(i) for i in span_ids]
        a, b = target.span_range(span_ids)
        embeds = self.span_embeds(target, span_ids).detach().requires_grad_(True)  # [1, seq, d_model]
        fluency = logprob_weight != 0.0
        one_hot = torch.nn.functional.one_hot(torch.tensor(span_ids, device=self.device), self.vocab_size).to(
            embeds.dtype).requires_grad_(fluency)                                   # [span, vocab]
        with torch.enable_grad():
            probe, logprob = self.score_embeds(
                embeds, [target.row(span_ids)], target.position,
                span_one_hot=one_hot[None] if fluency else None, spans=[(a, b)] if fluency else None)
            value = probe[0] + (logprob_weight * logprob[0] if logprob is not None else 0.0)
            grads = torch.autograd.grad(value, [embeds, one_hot] if fluency else [embeds])
        grad = self.embedding_vjp(grads[0][0, a:b])                                  # [span, vocab]
        if fluency:
            grad = grad + grads[1].float()  # the span's tokens as the log-prob's targets
        return grad.cpu()

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
        # not lm.batch_logprobs: embeddings in, gradients kept, the one-hot span as targets;
        # targets: the rows' own tokens, the (differentiable) one-hot inside each span
        vocab = span_one_hot.shape[-1]
        targets = torch.stack([
            torch.cat([torch.nn.functional.one_hot(torch.tensor(r.ids[:a], device=self.device), vocab).to(
                span_one_hot.dtype), span_one_hot[i], torch.nn.functional.one_hot(
                torch.tensor(r.ids[e:], device=self.device), vocab).to(span_one_hot.dtype)])
            for i, (r, (a, e)) in enumerate(zip(rows, spans))])  # [batch, seq, vocab]
        return score, span_logprobs(logits, targets, spans, mean=True)
