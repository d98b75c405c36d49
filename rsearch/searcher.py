"""Searcher: the ask → score → tell loop of one search, its budget and objective, and the immutable result.

    result = Searcher("layer24.pt", strategy="beam", budget=256).optimize("please ,")
    result.best_text, result.best_score, result.top, result.best_so_far

Every strategy is charged the same way: one scored candidate is one evaluation (gradients, sampling and
template bookkeeping are free); the Searcher asks for at most the evaluations left, and stops at the budget
in evaluations and/or seconds. The objective is the probe score, optionally + λ × the mean log-prob of the
searched span under the model (stay in its distribution) − a length penalty per token.

`run_prefixes` is the one way to run many prefixes: in-process (`Searcher.optimize_many`) or on Ray workers
(`rsearch.distributed.run_many`), streaming each finished result to `run_dir/results.jsonl`; a resumed run
skips prefixes already there. Each prefix's seed
comes from (seed, prefix) alone, so a result does not depend on which worker ran it or whether the run was
resumed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from rsearch.config import Config, check
from rsearch.errors import RsearchError
from rsearch.io_utils import append_jsonl, read_jsonl, write_text
from rsearch.lm import sample_tokens
from rsearch.positions import Position
from rsearch.scorer import ProbeScorer, Scores
from rsearch.targets import Target
from rsearch.strategies.base import Candidate, Scored, Strategy, make_strategy


# ----- configs -----

@dataclass(frozen=True)
class Budget(Config):
    """How much a search may spend: scored candidates and/or wall-clock seconds (at least one)."""

    evaluations: int | None = 256
    seconds: float | None = None

    def __post_init__(self):
        check(self.evaluations is not None or self.seconds is not None, "budget: give evaluations or seconds")
        check(self.evaluations is None or self.evaluations > 0,
              f"budget must be positive, got {self.evaluations} evaluations")
        check(self.seconds is None or self.seconds > 0, f"budget must be positive, got {self.seconds} seconds")


@dataclass(frozen=True)
class Objective(Config):
    """score = probe + logprob_weight × mean log-prob of the span − length_penalty × span tokens."""

    logprob_weight: float = 0.0
    length_penalty: float = 0.0

    def __post_init__(self):
        check(math.isfinite(self.logprob_weight), "objective.logprob_weight must be finite")
        check(math.isfinite(self.length_penalty), "objective.length_penalty must be finite")

    @property
    def needs_logprob(self) -> bool:
        return self.logprob_weight != 0.0

    def combine(self, probe: float, logprob: float | None, n_tokens: int) -> float:
        lp = self.logprob_weight * logprob if self.needs_logprob and logprob is not None else 0.0
        return float(probe + lp - self.length_penalty * n_tokens)


def as_budget(budget: Budget | int | dict | None) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget is None:
        return Budget()
    if isinstance(budget, dict):
        return Budget.from_dict(budget, where="budget")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise RsearchError(f"budget: expected a number of evaluations, got {budget!r}")
    if budget != int(budget):
        raise RsearchError(f"budget: expected a whole number of evaluations, got {budget!r}")
    return Budget(evaluations=int(budget))


def prefix_seed(seed: int, prefix: str) -> int:
    """The seed of one prefix's search: a function of (seed, prefix) only."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{prefix}".encode()).digest()[:4], "little") & 0x7FFFFFFF


# ----- what a strategy sees -----

@dataclass
class SearchContext:
    """Handed to `Strategy.setup`: implements `StrategyContext` (rsearch.strategies.base) over the scorer,
    the target frame, the objective and seeded RNGs."""

    scorer: ProbeScorer
    target: Target
    objective: Objective
    seed: int
    rng: random.Random = field(init=False)
    generator: torch.Generator = field(init=False)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def candidate(self, ids: Sequence[int]) -> Candidate:
        ids = tuple(int(i) for i in ids)
        return Candidate(ids, self.target.decode(ids))

    def valid(self, ids: Sequence[int]) -> bool:
        return self.target.valid(ids)

    def sample_spans(self, bases: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0, *,
                     allowed: torch.Tensor | None = None, stop: bool = True) -> list[tuple[tuple[int, ...], bool]]:
        """Continues each partial span with the model's own distribution (for a prompt target, the model
        continuing the user's turn). Returns (base + new tokens, whether the turn ended) per base; at least one
        new token each."""
        contexts = [tuple(self.target.context_ids) + tuple(b) for b in bases]
        got = sample_tokens(self.scorer.model, contexts, max_new_tokens, pad_id=self.scorer.pad_id,
                            generator=self.generator, temperature=temperature,
                            stop_ids=self.target.stop_ids if stop else (),
                            allowed=self.target.allowed if allowed is None else allowed, min_new_tokens=1)
        return [(tuple(b) + new, stopped) for b, (new, stopped) in zip(bases, got)]

    def span_gradient(self, ids: Sequence[int]) -> torch.Tensor:
        """`[span, vocab]`: ∂ objective / ∂ one-hot of the span (computed by the scorer)."""
        return self.scorer.span_gradient(self.target, ids, self.objective.logprob_weight)


# ----- results -----

@dataclass(frozen=True)
class Found:
    """One scored span."""

    text: str                     # the span's text
    prompt: str                   # the searched message in full (prompt target: prefix + span)
    ids: tuple[int, ...]
    score: float                  # objective
    probe_score: float
    logprob: float | None = None


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one search (immutable). Equality ignores `seconds`."""

    prefix: str
    target: str
    strategy: str
    seed: int
    best: Found
    top: tuple[Found, ...]              # best first, distinct spans
    best_so_far: tuple[float, ...]      # objective's best after each evaluation
    evaluations: int
    seconds: float = field(compare=False)
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def best_text(self) -> str:
        return self.best.text

    @property
    def best_score(self) -> float:
        return self.best.score

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        def found(x):
            return Found(**{**x, "ids": tuple(x["ids"])})

        return cls(prefix=d["prefix"], target=d["target"], strategy=d["strategy"], seed=int(d["seed"]),
                   best=found(d["best"]), top=tuple(found(x) for x in d["top"]),
                   best_so_far=tuple(float(x) for x in d["best_so_far"]), evaluations=int(d["evaluations"]),
                   seconds=float(d["seconds"]), options=dict(d.get("options") or {}))


# ----- the search -----

def _strategy_factory(strategy: str | Strategy | type, options: dict | None) -> Callable[[], Strategy]:
    """A function making a fresh strategy per search (validated now, so bad options fail before any search)."""
    if isinstance(strategy, Strategy):
        if options:
            raise RsearchError("options are given to a strategy instance's constructor, not here")
        cls, config = type(strategy), strategy.config
        return lambda: cls(config)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        config = strategy.Config.from_dict(options or {}, where=strategy.name)
        return lambda: strategy(config)
    first = make_strategy(strategy, options)
    cls, config = type(first), first.config
    return lambda: cls(config)


class Searcher:
    """Runs searches with one scorer, strategy, budget and objective.

    Args:
        scorer: a ProbeScorer, or a probe file path (its model is loaded from the metadata unless `model`).
        strategy: a registered name ("beam", "gcg", "optuna", "random"), a Strategy instance or class.
        budget: evaluations (int), a Budget, or {"evaluations": …, "seconds": …}.
        options: strategy options (with a name or class).
        target: "prompt" (search the rest of the user's message) or "completion" (search the answer).
        position: where the probe reads; the target's default (`user_end` / the completion's end) if None.
        objective: an Objective or a dict (logprob_weight, length_penalty).
        seed: base seed; each prefix's own seed is `prefix_seed(seed, prefix)`.
        top_k: how many distinct best spans a result keeps.
        pool: a worker pool (rsearch.distributed) to fan candidate scoring out to; scoring is local if None.
        model, tokenizer: a model for a probe path (instead of the one its metadata names).
    """

    def __init__(self, scorer: ProbeScorer | str | Path, strategy: str | Strategy | type = "beam",
                 budget: Budget | int | dict | None = 256, *, options: dict | None = None, target: str = "prompt",
                 position: str | Position | None = None, objective: Objective | dict | None = None, seed: int = 0,
                 top_k: int = 10, pool=None, model=None, tokenizer=None):
        self.budget = as_budget(budget)
        self.objective = objective if isinstance(objective, Objective) else Objective.from_dict(objective or {},
                                                                                                where="objective")
        self._make_strategy = _strategy_factory(strategy, options)
        self.strategy_name = self._make_strategy().name
        if target not in ("prompt", "completion"):
            raise RsearchError(f"unknown target {target!r}: use prompt or completion")
        self.target_kind = target
        self.position = position
        check(isinstance(seed, int), f"seed must be an integer, got {seed!r}")
        self.seed = seed
        check(top_k >= 1, f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k
        self.pool = pool
        self.scorer = scorer if isinstance(scorer, ProbeScorer) else ProbeScorer.from_file(scorer, model, tokenizer)

    def strategy(self) -> Strategy:
        """A fresh strategy instance (one per search)."""
        return self._make_strategy()

    def optimize(self, prompt_prefix: str, *, seed: int | None = None,
                 on_scored: Callable[[list[Scored]], None] | None = None) -> SearchResult:
        """Searches the span after `prompt_prefix` (prompt target) or the answer to it (completion target).

        Args:
            prompt_prefix: the user's message so far (prompt) or the whole user message (completion).
            seed: this search's seed; `prefix_seed(self.seed, prompt_prefix)` if None.
            on_scored: called with each batch of scored candidates as they come (for streaming).
        """
        target = self.scorer.target(self.target_kind, prompt_prefix, self.position)
        seed = prefix_seed(self.seed, prompt_prefix) if seed is None else int(seed)
        strategy = self.strategy()
        context = SearchContext(self.scorer, target, self.objective, seed)
        start = time.perf_counter()
        strategy.setup(context)
        seen: dict[tuple[int, ...], Scored] = {}
        history: list[float] = []
        best = -math.inf
        while True:
            left = self._left(len(history), start)
            if left <= 0:
                break
            candidates = list(strategy.ask(left))[:left]
            if not candidates:  # the strategy has nothing more to propose
                break
            scored = self.evaluate(target, candidates, strategy.name)
            for s in scored:
                best = max(best, s.score)
                history.append(best)
                old = seen.get(s.candidate.ids)
                if old is None or s.score > old.score:
                    seen[s.candidate.ids] = s
            strategy.tell(scored)
            if on_scored:
                on_scored(scored)
        if not seen:
            raise RsearchError(f"strategy {strategy.name!r} proposed no candidates for prefix {prompt_prefix!r}")
        ranked = sorted(seen.values(), key=lambda s: -s.score)[: self.top_k]
        top = tuple(Found(s.candidate.text, target.full_text(s.candidate.ids), s.candidate.ids, s.score,
                          s.probe_score, s.logprob) for s in ranked)
        return SearchResult(prefix=prompt_prefix, target=self.target_kind, strategy=strategy.name, seed=seed,
                            best=top[0], top=top, best_so_far=tuple(history), evaluations=len(history),
                            seconds=time.perf_counter() - start, options=strategy.config.to_dict())

    def _left(self, used: int, start: float) -> int:
        if self.budget.seconds is not None and time.perf_counter() - start >= self.budget.seconds:
            return 0
        if self.budget.evaluations is None:
            return 1 << 30
        return self.budget.evaluations - used

    def evaluate(self, target: Target, candidates: Sequence[Candidate], who: str = "strategy") -> list[Scored]:
        """Scores candidates with the objective (through the pool if there is one)."""
        for c in candidates:
            if not target.valid(c.ids):
                raise RsearchError(f"{who} proposed an invalid span {c.ids[:8]!r}: ids must be non-empty, "
                                   f"non-special tokens below {len(target.allowed)}")
        rows = [target.row(c.ids) for c in candidates]
        spans = [target.span_range(c.ids) for c in candidates] if self.objective.needs_logprob else None
        if self.pool is not None:
            scores: Scores = self.pool.score_rows(rows, target.position, spans)
        else:
            scores = self.scorer.score_rows(rows, target.position, spans)
        out = []
        for i, c in enumerate(candidates):
            probe = float(scores.probe[i])
            lp = float(scores.logprob[i]) if scores.logprob is not None else None
            out.append(Scored(c, self.objective.combine(probe, lp, len(c.ids)), probe, lp))
        return out

    def map_search(self, todo: Sequence[tuple[int, str]], on_result: Callable[[int, SearchResult], None]) -> None:
        """Searches each (index, prefix) here, one after another, calling on_result as each finishes (the
        in-process counterpart of `RayPool.map_search`; scoring fans out over the Searcher's `pool`, if any)."""
        for index, prefix in todo:
            on_result(index, self.optimize(prefix))

    def optimize_many(self, prefixes: Iterable[str], *, run_dir: str | Path | None = None, resume: bool = False,
                      on_result: Callable[[SearchResult], None] | None = None) -> list[SearchResult]:
        """Searches every prefix in this process (see `run_prefixes`); results in input order.

        Prefixes spread over Ray workers: `rsearch.distributed.run_many`.
        """
        return run_prefixes(prefixes, self.map_search, run_dir=run_dir, resume=resume,
                            on_result=None if on_result is None else lambda _, r: on_result(r))


# ----- many prefixes, resumable -----

MapSearch = Callable[[Sequence[tuple[int, str]], Callable[[int, SearchResult], None]], None]


def run_prefixes(prefixes: Iterable[str], map_search: MapSearch, *, run_dir: str | Path | None = None,
                 resume: bool = False, on_result: Callable[[int, SearchResult], None] | None = None
                 ) -> list[SearchResult]:
    """The one run-many path: searches every prefix, streaming each result to `run_dir/results.jsonl` when found.

    Args:
        prefixes: prompt prefixes (or prompts, for the completion target); each must be non-empty.
        map_search: runs the (index, prefix) pairs still to do, calling back with each (index, result) as it
            finishes: `Searcher.map_search` (in-process) or `RayPool.map_search` (a prefix per Ray worker). It is
            not called when nothing is left to do.
        run_dir: where results stream; with `resume`, prefixes already there are not searched again.
        on_result: called with (index, result) as each search finishes (after it is written).

    Returns:
        the results, in the order of `prefixes`.
    """
    prefixes = list(prefixes)
    for i, p in enumerate(prefixes):
        if not isinstance(p, str) or not p.strip():
            raise RsearchError(f"empty prefix (number {i + 1}): give the start of a user message to search from")
    log = ResultLog(run_dir, resume=resume) if run_dir is not None else None
    results: dict[int, SearchResult] = {}
    if log:
        results.update({i: r for i, r in log.done().items() if i < len(prefixes) and r.prefix == prefixes[i]})

    def found(index: int, result: SearchResult) -> None:
        if index in results:
            return  # never twice (e.g. a retried task that had in fact finished)
        if log:
            log.append(index, result)
        results[index] = result
        if on_result:
            on_result(index, result)

    todo = [(i, p) for i, p in enumerate(prefixes) if i not in results]
    if todo:
        map_search(todo, found)
    return [results[i] for i in range(len(prefixes))]


# ----- the run directory's result stream -----

class ResultLog:
    """`run_dir/results.jsonl`: one line per finished search, `{"index", "prefix", "result"}`, fsync'd.

    A crash loses at most the line being written (a torn last line is dropped, and cut off before the next
    append). Without `resume`, a directory that already holds results is refused rather than mixed.
    """

    def __init__(self, run_dir: str | Path, *, resume: bool = False):
        self.dir = Path(run_dir)
        self.path = self.dir / "results.jsonl"
        self.dir.mkdir(parents=True, exist_ok=True)
        records = read_jsonl(self.path)
        if records and not resume:
            raise RsearchError(f"{self.dir} already holds {len(records)} results: pass --resume to continue "
                               "that run, or choose another --out")
        if self.path.exists():
            text = self.path.read_text()
            complete = "".join(line + "\n" for line in text.splitlines()[: len(records)])
            if text != complete:  # a torn last line from a crash: cut it off before appending
                write_text(self.path, complete)
        self._done: dict[int, SearchResult] = {}
        for r in records:
            self._done.setdefault(int(r["index"]), SearchResult.from_dict(r["result"]))

    def done(self) -> dict[int, SearchResult]:
        """Results already in the file, by prefix index."""
        return dict(self._done)

    def append(self, index: int, result: SearchResult) -> None:
        if index in self._done:
            return  # never duplicate a result (e.g. a retried task that had in fact finished)
        append_jsonl(self.path, {"index": index, "prefix": result.prefix, "result": result.to_dict()})
        self._done[index] = result
