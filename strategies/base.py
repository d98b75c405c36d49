"""The strategy interface: ask(n) → candidates, tell(scored) → update; and the name registry.

A strategy proposes token spans for one search (the searched part of a prompt or completion); the Searcher
scores them through the ProbeScorer and tells the strategy the results. What a strategy may ask of the search
is the `StrategyContext` protocol below. Strategies hold state and must pickle (they travel to Ray workers);
results (`Scored`) are immutable.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from rsearch.config import Config
from rsearch.errors import RsearchError
from rsearch.plugins import load_object
from rsearch.targets import Target


class BudgetSpent(Exception):
    """Raised by a `StrategyContext` call that the search's compute budget cannot pay for: the search ends there
    (the Searcher catches it; a strategy need not)."""


@dataclass(frozen=True)
class Candidate:
    ids: tuple[int, ...]  # token ids of the searched span
    text: str             # its decoded text


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float                  # the objective: probe score + λ·mean log-prob − length penalty
    probe_score: float
    logprob: float | None = None  # mean log-prob of the span under the model, when computed


# ----- what a strategy may ask of the search it runs in -----

@runtime_checkable
class StrategyContext(Protocol):
    """The narrow interface a strategy gets in `setup` (the Searcher's `SearchContext`, or a test's fake).

    A strategy never reaches the model itself: it samples spans, asks for the objective's gradient with respect
    to a span's one-hot, checks candidates, and learns scores through `tell`. The context charges what those
    calls cost to the search's budget in forward-equivalents (`rsearch.searcher.Budget`): a sampled token is one,
    a gradient three (forward + backward), a scored candidate one (charged by the Searcher) — so every strategy
    pays the same price for the same work, whatever its own bookkeeping. A call the budget cannot pay for raises
    `BudgetSpent`, which ends the search.
    """

    target: Target               # the frame: encode/decode, valid, roundtrips, allowed ids, kind, prompt_prefix
    seed: int                    # this search's seed
    rng: random.Random           # seeded from `seed`
    generator: torch.Generator   # seeded from `seed` (CPU)

    def candidate(self, ids: Sequence[int]) -> Candidate:
        """A span as a candidate (its ids and decoded text)."""
        ...

    def valid(self, ids: Sequence[int]) -> bool:
        """Whether the Searcher would accept this span: non-empty, real non-special tokens only."""
        ...

    def sample_spans(self, bases: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0, *,
                     allowed: Tensor | None = None, stop: bool = True) -> list[tuple[tuple[int, ...], bool]]:
        """Continues each partial span with the model's own distribution, drawn with `generator`.

        Args:
            bases: partial spans to continue (`()` starts a fresh one).
            max_new_tokens: new tokens per span at most (at least one is drawn).
            temperature: softmax temperature; 0 is greedy.
            allowed: `[vocab]` bool of tokens a draw may take; the target's allowed tokens if None.
            stop: end a span at the target's end-of-turn tokens; False always draws max_new_tokens.

        Returns:
            per base, in order: (base + new token ids, whether an end-of-turn token ended it) — near the end of a
            compute budget, for the first bases only (those it pays for; list bases best first).
        """
        ...

    @property
    def probe_metadata(self) -> dict[str, Any]:
        """The probe's metadata (model, hook, position, dataset, …)."""
        ...

    def span_gradient(self, ids: Sequence[int]) -> Tensor:
        """`[span, vocab]` float32 (cpu): ∂ objective / ∂ one-hot of the span `ids`, at the one-hot of `ids`."""
        ...


class Strategy(ABC):
    """Base class. Subclasses set `name` and `Config` (a frozen Config dataclass) and register themselves."""

    name: ClassVar[str]
    Config: ClassVar[type[Config]]

    def __init__(self, config: Config | dict | None = None, **overrides: Any):
        if config is None or isinstance(config, dict):
            config = self.Config.from_dict({**(config or {}), **overrides}, where=self.name)
        elif overrides:
            config = config.replace(**overrides)
        self.config = config

    @abstractmethod
    def setup(self, context: StrategyContext) -> None:
        """Called once per search, before the first ask, with what it may use (`StrategyContext`)."""

    @abstractmethod
    def ask(self, n: int) -> list[Candidate]:
        """Up to n new candidates to score."""

    @abstractmethod
    def tell(self, scored: list[Scored]) -> None:
        """Scores of the last ask's candidates, in the same order."""


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls
    return cls


def strategy_class(name_or_spec: str) -> type[Strategy]:
    """A registered strategy by name, or a `module.path:Class` from outside the package (a Strategy subclass
    with a name and a Config)."""
    import rsearch.strategies  # noqa: F401  (registers the built-in strategies; that package imports this module)

    if ":" not in name_or_spec:
        if name_or_spec not in REGISTRY:
            raise RsearchError(f"unknown strategy {name_or_spec!r}: choose from {', '.join(sorted(REGISTRY))} "
                               f"or give module.path:Class")
        return REGISTRY[name_or_spec]
    cls = load_object(name_or_spec, "strategy")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise RsearchError(f"strategy {name_or_spec}: not a subclass of rsearch.strategies.Strategy")
    if not isinstance(getattr(cls, "name", None), str) or not (
            isinstance(getattr(cls, "Config", None), type) and issubclass(cls.Config, Config)):
        raise RsearchError(f"strategy {name_or_spec}: set a `name` and a `Config` (an rsearch.config.Config)")
    return cls


def make_strategy(name_or_instance: str | Strategy, options: dict | None = None) -> Strategy:
    """A strategy by registered name or `module.path:Class` (with options, checked by its Config), or the
    instance given."""
    if isinstance(name_or_instance, Strategy):
        if options:
            raise RsearchError("options are given to a strategy instance's constructor, not here")
        return name_or_instance
    return strategy_class(name_or_instance)(options or {})
