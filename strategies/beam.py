"""`beam`: grow spans chunk by chunk with the model's own samples, keeping the B best under the objective.

    beams ← {empty span}
    loop:
        for each beam that can still grow (its turn not ended, shorter than max_tokens):
            sample `branching` continuations of `chunk` tokens from the model (temperature T)
        score the children; beams ← the `width` best of beams ∪ children (distinct spans)
        when no beam can grow, restart from the empty span (the kept beams still compete)

For a prompt target the model continues the user's own turn, so the spans stay in its distribution of what
users write; for a completion target this is reward-guided decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

from rsearch.config import Config, check
from rsearch.strategies.base import Candidate, Scored, Strategy, StrategyContext, register


@dataclass(frozen=True)
class BeamConfig(Config):
    width: int = 4             # beams kept (B)
    branching: int = 4         # continuations sampled per beam per step
    chunk: int = 4             # tokens added per step
    temperature: float = 1.0   # sampling temperature
    max_tokens: int = 32       # a beam stops growing at this length

    def __post_init__(self):
        for name in ("width", "branching", "chunk", "max_tokens"):
            check(getattr(self, name) >= 1, f"beam.{name} must be at least 1, got {getattr(self, name)}")
        check(self.temperature >= 0, f"beam.temperature must be ≥ 0, got {self.temperature}")


@dataclass(frozen=True)
class Beam:
    ids: tuple[int, ...]
    score: float
    ended: bool  # the turn ended (a stop token was sampled) or max_tokens reached


@register
class BeamSearch(Strategy):
    name = "beam"
    Config = BeamConfig

    def setup(self, context: StrategyContext) -> None:
        self.context = context
        self.beams: list[Beam] = []
        self.pending: dict[tuple[int, ...], bool] = {}  # ids of the last ask → ended

    def ask(self, n: int) -> list[Candidate]:
        cfg = self.config
        # parents: growable beams, best first; the empty span when none can grow
        parents = [b.ids for b in self.beams if not b.ended] or [()]
        # branching children per parent, dealt round-robin so the best parents are served first when n is short
        plan = [p for _ in range(cfg.branching) for p in parents][:n]
        plan.sort(key=parents.index)
        room = [min(cfg.chunk, cfg.max_tokens - len(p)) for p in plan]
        children = []
        for size in sorted(set(room)):
            group = [p for p, r in zip(plan, room) if r == size]
            children += self.context.sample_spans(group, size, cfg.temperature)
        known = {b.ids for b in self.beams}
        self.pending = {}
        for ids, stopped in children:
            if ids not in known and ids not in self.pending:
                self.pending[ids] = stopped or len(ids) >= cfg.max_tokens
        return [self.context.candidate(ids) for ids in self.pending]

    def tell(self, scored: list[Scored]) -> None:
        # keep the `width` best distinct spans of the old beams and the new children
        new = [Beam(s.candidate.ids, s.score, self.pending.get(s.candidate.ids, True)) for s in scored]
        pool = {b.ids: b for b in self.beams}
        for b in new:
            if b.ids not in pool or b.score > pool[b.ids].score:
                pool[b.ids] = b
        self.beams = sorted(pool.values(), key=lambda b: -b.score)[: self.config.width]
