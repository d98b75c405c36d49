"""`gcg`: Greedy Coordinate Gradient (Zou et al. 2023) on the searched span, maximizing the probe's score.

nanoGCG is the reference; its defaults are kept (span of up to 20 tokens, search width 512, top-k 256, one token
replaced per candidate, no buffer, candidates that do not survive decode→encode dropped), but for the initial
span: the model's own continuation of the prefix, ending where the model ends the user's turn. The loss is the
negated objective: the probe score at the target's position (+ λ × the span's mean log-prob, when asked).

    current ← the initial span (scored once)
    loop:
        g ← ∂ objective / ∂ one-hot(current)      # [span, vocab], context.span_gradient: one forward + backward,
                                                  # at the embeddings the model scores (its embedding module)
        top-k tokens per position by g, forbidden tokens masked
        search_width candidates: n_replace random positions each take a random top-k token
        drop candidates whose message does not re-encode to the same ids, and duplicates
        score them (the Searcher charges each one); current ← the best in the buffer

Every step's work is charged to the search's budget (rsearch.searcher.Budget): the gradient by the context (a
forward and a backward), each scored candidate by the Searcher, the init's sampled tokens by the context.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rsearch.config import Config, check
from rsearch.errors import RsearchError
from rsearch.strategies.base import Candidate, Scored, Strategy, StrategyContext, register


@dataclass(frozen=True)
class GCGConfig(Config):
    n_tokens: int = 20             # span length (nanoGCG's init "x x … x" is 20 tokens)
    init: str = "sample"           # "sample": the model's own continuation of the prefix; else the span's text
    # init="sample" stops where the model ends the user's turn (≤ n_tokens; nanoGCG's fixed length: False). Drawn
    # past the turn's end, the span starts outside the model's distribution and single-token swaps cannot end it.
    natural_length: bool = True
    search_width: int = 512        # candidates per step
    topk: int = 256                # substitutions considered per position
    n_replace: int = 1             # positions changed per candidate
    buffer_size: int = 0           # 0: move to each step's best (nanoGCG); k: keep the k best, move to the best
    filter_ids: bool = True        # drop candidates that do not survive decode → encode
    allow_non_ascii: bool = False  # allow tokens whose text is not printable ASCII
    init_temperature: float = 1.0  # for init="sample"

    def __post_init__(self):
        for name in ("n_tokens", "search_width", "topk", "n_replace"):
            check(getattr(self, name) >= 1, f"gcg.{name} must be at least 1, got {getattr(self, name)}")
        check(self.buffer_size >= 0, f"gcg.buffer_size must be ≥ 0, got {self.buffer_size}")
        check(self.n_replace <= self.n_tokens, f"gcg.n_replace ({self.n_replace}) exceeds n_tokens ({self.n_tokens})")
        check(self.init_temperature >= 0, f"gcg.init_temperature must be ≥ 0, got {self.init_temperature}")


# ----- plain tensor functions -----

def sample_ids_from_grad(ids: Tensor, grad: Tensor, search_width: int, topk: int, n_replace: int,
                         not_allowed: Tensor, generator: torch.Generator) -> Tensor:
    """nanoGCG's candidate sampler: `[span]` ids, `[span, vocab]` gradient → `[search_width, span]` candidates.

    Each candidate replaces n_replace random positions by a random one of that position's top-k tokens
    (ranked by the gradient of the objective, which is maximized; `not_allowed` `[vocab]` bool is masked).
    """
    span = ids.shape[0]
    grad = grad.masked_fill(not_allowed[None, : grad.shape[1]], float("-inf"))
    top = grad.topk(topk, dim=1).indices                                         # [span, topk]
    pos = torch.argsort(torch.rand(search_width, span, generator=generator), dim=1)[:, :n_replace]
    pick = torch.randint(0, topk, (search_width, n_replace, 1), generator=generator)
    val = torch.gather(top[pos], 2, pick).squeeze(2)                            # [search_width, n_replace]
    return ids.repeat(search_width, 1).scatter_(1, pos, val)


def filter_ids(candidates: Tensor, target) -> list[tuple[int, ...]]:
    """Candidates whose message re-encodes to the same ids (nanoGCG's filter_ids, with the span read in its
    message: the prefix and the template around it tokenized as a whole), as tuples."""
    spans = [tuple(c) for c in candidates.tolist()]
    return [c for c, ok in zip(spans, target.roundtrip_mask(spans)) if ok]


def not_allowed_mask(target, allow_non_ascii: bool) -> Tensor:
    """`[vocab]` bool: special and unknown ids, and (unless allowed) tokens whose text is not printable ASCII."""
    bad = ~target.allowed.clone()
    if not allow_non_ascii:
        ids = torch.nonzero(target.allowed).flatten().tolist()
        texts = target.tokenizer.batch_decode([[i] for i in ids])
        for i, text in zip(ids, texts):
            if not (text.isascii() and text.isprintable()) or not text.strip():
                bad[i] = True
    return bad


# ----- the strategy -----

@register
class GCG(Strategy):
    name = "gcg"
    Config = GCGConfig

    def setup(self, context: StrategyContext) -> None:
        self.context = context
        self.not_allowed = not_allowed_mask(context.target, self.config.allow_non_ascii)
        n_ok = int((~self.not_allowed).sum())
        if n_ok == 0:
            raise RsearchError("gcg: no token may be searched (all are special or non-ASCII)")
        self.topk = min(self.config.topk, n_ok)
        self.buffer: list[Scored] = []  # best first
        self.current: tuple[int, ...] | None = None
        self.started = False

    def _init_ids(self) -> tuple[int, ...]:
        cfg, ctx = self.config, self.context
        if cfg.init != "sample":
            ids = ctx.target.encode_continuation(cfg.init)  # the init text continuing the prefix, as one message
            if ids is None or not ctx.valid(ids):
                raise RsearchError(f"gcg.init {cfg.init!r} has special or unknown tokens, or merges with the prefix")
            return ids
        # the model's own continuation from tokens GCG may use: up to the turn's end, or exactly n_tokens long
        allowed = ~self.not_allowed
        for _ in range(8):
            (new, _), = ctx.sample_spans([()], cfg.n_tokens, cfg.init_temperature, allowed=allowed,
                                         stop=cfg.natural_length)
            if not cfg.filter_ids or ctx.target.roundtrips(new):
                return new
        return new

    def ask(self, n: int) -> list[Candidate]:
        cfg, ctx = self.config, self.context
        # first ask: the initial span, so the buffer starts from a scored point
        if not self.started:
            self.started = True
            return [ctx.candidate(self._init_ids())]
        current = torch.tensor(self.current, dtype=torch.long)
        grad = ctx.span_gradient(self.current)                                  # [span, vocab]
        n_replace = min(cfg.n_replace, len(self.current))
        for _ in range(4):  # resample when the filter drops everything
            cands = sample_ids_from_grad(current, grad, cfg.search_width, self.topk, n_replace, self.not_allowed,
                                         ctx.generator)
            kept = filter_ids(cands, ctx.target) if cfg.filter_ids else [tuple(c) for c in cands.tolist()]
            unique = list(dict.fromkeys(k for k in kept if k != self.current))
            if unique:
                return [ctx.candidate(ids) for ids in unique[:n]]
        return []

    def tell(self, scored: list[Scored]) -> None:
        if not scored:
            return
        best = max(scored, key=lambda s: s.score)
        if self.config.buffer_size == 0:
            self.buffer = [best]  # nanoGCG with no buffer: move to the step's best, even if worse
        else:
            merged = {s.candidate.ids: s for s in self.buffer + sorted(scored, key=lambda s: -s.score)}
            self.buffer = sorted(merged.values(), key=lambda s: -s.score)[: self.config.buffer_size]
        self.current = self.buffer[0].candidate.ids
