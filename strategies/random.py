"""`random`: best-of-N samples from the model itself — the baseline every strategy is compared with.

Each ask draws fresh spans from the model's own distribution (for a prompt target, the model continuing the
user's turn; for a completion target, its answer), at the given temperature, until the turn ends or
`max_tokens`. Nothing is learned from the scores: the Searcher keeps the best.
"""
from __future__ import annotations

from dataclasses import dataclass

from rsearch.config import Config, check
from rsearch.strategies.base import Candidate, Scored, Strategy, StrategyContext, register


@dataclass(frozen=True)
class RandomConfig(Config):
    max_tokens: int = 16       # longest span sampled
    temperature: float = 1.0   # 1.0 is the model's own distribution
    batch: int = 16            # samples drawn (and scored) per ask

    def __post_init__(self):
        check(self.max_tokens >= 1, f"random.max_tokens must be at least 1, got {self.max_tokens}")
        check(self.temperature >= 0, f"random.temperature must be ≥ 0, got {self.temperature}")
        check(self.batch >= 1, f"random.batch must be at least 1, got {self.batch}")


@register
class RandomSampling(Strategy):
    name = "random"
    Config = RandomConfig

    def setup(self, context: StrategyContext) -> None:
        self.context = context

    def ask(self, n: int) -> list[Candidate]:
        # n fresh samples from the empty span, each at least one token long
        k = min(n, self.config.batch)
        drawn = self.context.sample_spans([()] * k, self.config.max_tokens, self.config.temperature)
        return [self.context.candidate(ids) for ids, _ in drawn]

    def tell(self, scored: list[Scored]) -> None:
        pass  # best-of-N: the Searcher keeps the best
