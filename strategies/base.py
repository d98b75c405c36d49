"""The strategy interface: ask(n) → candidates, tell(scored) → update; and the name registry.

A strategy proposes token spans for one search (the searched part of a prompt or completion); the Searcher
scores them through the ProbeScorer and tells the strategy the results. Strategies hold state; results
(`Scored`) are immutable.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from rsearch.config import Config
from rsearch.errors import RsearchError


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
    def setup(self, context: Any) -> None:
        """Called once per search with the SearchContext (scorer, target, seed) before the first ask."""

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


def make_strategy(name_or_instance: str | Strategy, options: dict | None = None) -> Strategy:
    """A registered strategy by name (with options), or the instance given."""
    if isinstance(name_or_instance, Strategy):
        if options:
            raise RsearchError("options are given to a strategy instance's constructor, not here")
        return name_or_instance
    import rsearch.strategies  # noqa: F401  (registers the built-in strategies)

    if name_or_instance not in REGISTRY:
        raise RsearchError(f"unknown strategy {name_or_instance!r}: choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name_or_instance](options or {})
