"""`beam`: grow spans chunk by chunk with the model's own samples, keeping the B best under the objective.

    beams ← {empty span}
    loop:
        for each beam that can still grow (its turn not ended, shorter than max_tokens):
            sample `branching` continuations of `chunk` tokens from the model (temperature T)
        complete each child whose turn has not ended with one more sample, to the turn's end (a rollout), and score
        the completed span: the child's value is its rollout's score (when every child was drawn before, draw
        again — each draw is charged — and after REDRAWS such draws count those parents as spent)
        beams ← the `width` best of beams ∪ children (distinct spans)
        when no beam can grow, grow the best unfinished, unspent spans ever scored instead (the empty span when
        there are none); the kept beams still compete

Every scored span is a whole message, so a result is never a prompt cut off mid-sentence (scoring the partial
spans themselves made the probe's reading of an unfinished question the search's result: on the tiny organism
v2, 24 prefixes at 384 forward-equivalents, beam's prompts then got −1.47 [−2.51, −0.54] true reward against
random best-of-N). The rollouts' tokens are charged like any sampled token.

For a prompt target the model continues the user's own turn, so the spans stay in its distribution of what
users write; for a completion target this is reward-guided decoding with rollouts.
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
    ids: tuple[int, ...]  # the grown span
    score: float          # its rollout's objective
    ended: bool           # the turn ended (a stop token was sampled) or max_tokens reached


@register
class BeamSearch(Strategy):
    name = "beam"
    Config = BeamConfig

    REDRAWS = 2  # draws of a set of parents before they count as spent (every child drawn was scored before)

    def setup(self, context: StrategyContext) -> None:
        self.context = context
        self.beams: list[Beam] = []
        self.pending: dict[tuple[int, ...], tuple[tuple[int, ...], bool]] = {}  # rollout asked → (child, ended)
        self.scored: dict[tuple[int, ...], Beam] = {}    # every span scored so far
        self.spent: set[tuple[int, ...]] = set()         # parents whose draws gave only spans scored before

    def _parents(self) -> list[tuple[int, ...]]:
        """Growable beams, best first; else the best growable spans scored before; else the empty span ([] when
        that too is spent)."""
        growable = lambda b: not b.ended and b.ids not in self.spent  # noqa: E731
        frontier = sorted(filter(growable, self.scored.values()), key=lambda b: -b.score)
        parents = [b.ids for b in self.beams if growable(b)] or [b.ids for b in frontier[: self.config.width]]
        return parents or ([()] if () not in self.spent else [])

    def ask(self, n: int) -> list[Candidate]:
        cfg = self.config
        self.pending = {}
        while not self.pending and (parents := self._parents()):
            # branching children per parent, dealt round-robin so the best parents are served first when n is short
            plan = [p for _ in range(cfg.branching) for p in parents][:n]
            plan.sort(key=parents.index)
            # a low-entropy model often redraws spans already scored: draw again (each draw is charged), then
            # count these parents as spent and grow the next ones
            for _ in range(self.REDRAWS):
                drawn = self._sample(plan, [min(cfg.chunk, cfg.max_tokens - len(p)) for p in plan])
                children = {ids: ended for _, (ids, ended) in drawn if ids not in self.scored}
                if children:
                    break
            else:
                self.spent.update(parents)
                continue
            wholes = [(c, c) for c, ended in children.items() if ended]
            open_ = [c for c, ended in children.items() if not ended]
            wholes += [(c, whole) for c, (whole, _) in self._sample(open_, [cfg.max_tokens - len(c) for c in open_])]
            for child, whole in wholes:
                self.pending.setdefault(whole, (child, children[child]))
        return [self.context.candidate(ids) for ids in self.pending]

    def _sample(self, bases: list[tuple[int, ...]], room: list[int]
                ) -> list[tuple[tuple[int, ...], tuple[tuple[int, ...], bool]]]:
        """(base, (base + up to its room in new tokens, ended)) per base, grouped by room; near the budget's end
        only the bases the budget pays for."""
        out = []
        for size in sorted(set(room)):
            group = [b for b, r in zip(bases, room) if r == size]
            for base, (ids, stopped) in zip(group, self.context.sample_spans(group, size, self.config.temperature)):
                out.append((base, (ids, stopped or len(ids) >= self.config.max_tokens)))
        return out

    def tell(self, scored: list[Scored]) -> None:
        # keep the `width` best distinct spans of the old beams and the new children, valued by their rollouts
        new = []
        for s in scored:
            if s.candidate.ids in self.pending:
                child, ended = self.pending[s.candidate.ids]
                new.append(Beam(child, s.score, ended))
        self.scored.update((b.ids, b) for b in new)
        pool = {b.ids: b for b in self.beams}
        for b in new:
            if b.ids not in pool or b.score > pool[b.ids].score:
                pool[b.ids] = b
        self.beams = sorted(pool.values(), key=lambda b: -b.score)[: self.config.width]
