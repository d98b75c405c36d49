"""Searcher: the ask → score → tell loop of one search, its budget and objective, and the immutable result.

    result = Searcher("layer24.pt", strategy="beam", budget=256).optimize("please ,")
    result.best_text, result.best_score, result.top, result.best_so_far

Every strategy is charged the same way, in forward-equivalents (see `Budget`): the context charges sampled
tokens and gradients as the strategy asks for them, the Searcher charges each scored candidate; a search stops
at its budget of candidates, forward-equivalents and/or seconds, and its result reports candidates and
forward-equivalents spent. The objective is the probe score + λ × the mean log-prob of the searched span under
the model (λ = `Objective.logprob_weight`, on by default: it keeps the search in the model's distribution —
benchmarks/bench_lambda.py measured the choice) − a length penalty per token. Each result also carries the bare
prefix's probe score, and (filled by `rsearch.exploitation.with_truth`) the true reward of the best prompt and
of the bare prefix: the exploitation gap is the probe's gain over the prefix minus the true gain.

`run_prefixes` is the one way to run many prefixes: in-process (`Searcher.optimize_many`) or on Ray workers
(`rsearch.distributed.run_many`), streaming each finished result to `run_dir/results.jsonl`; a resumed run
skips prefixes already there. Each prefix's seed
comes from (seed, prefix) alone, so a result does not depend on which worker ran it or whether the run was
resumed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from rsearch.config import Config, check
from rsearch.errors import RsearchError
from rsearch.io_utils import append_jsonl, write_text
from rsearch.lm import sample_tokens
from rsearch.positions import Position
from rsearch.scorer import ProbeScorer, Scores
from rsearch.targets import Target
from rsearch.strategies.base import BudgetSpent, Candidate, Scored, Strategy, make_strategy


# ----- configs -----

# forward-equivalents per unit of each kind of work (see Budget)
COSTS = {"scored": 1.0, "sampled": 1.0, "gradient": 3.0}


@dataclass(frozen=True)
class Budget(Config):
    """How much one search may spend: scored candidates (`evaluations`), forward-equivalents (`forwards`) and/or
    wall-clock `seconds` (at least one); the search stops at whichever runs out first.

    A forward-equivalent (FE) is one forward pass of one sequence through the model, whatever its length. Every
    strategy pays the same prices, charged where the work happens rather than by the strategy's own bookkeeping:

        a scored candidate   1 FE   the scorer's forward over the candidate's row (charged by the Searcher)
        a sampled token      1 FE   the pass that drew it: the first from the prefill, each next one a decode
                                    step; a drawn end-of-turn token counts (charged by `SearchContext.sample_spans`)
        a gradient           3 FE   one forward and one backward, a backward counting as two forwards
                                    (charged by `SearchContext.span_gradient`)

    The unit counts passes, not FLOPs: a decode step with a KV cache does less arithmetic than a forward over a
    whole row, but at these lengths both cost about one step's latency. A forwards budget is never exceeded:
    near its end, sampling is cut to what is left (each drawn span must still be scored), and a gradient or a
    draw that cannot be paid for ends the search.
    """

    evaluations: int | None = 256
    forwards: float | None = None
    seconds: float | None = None

    def __post_init__(self):
        check(self.evaluations is not None or self.forwards is not None or self.seconds is not None,
              "budget: give evaluations, forwards or seconds")
        check(self.evaluations is None or self.evaluations > 0,
              f"budget must be positive, got {self.evaluations} evaluations")
        check(self.forwards is None or self.forwards > 0, f"budget must be positive, got {self.forwards} forwards")
        check(self.seconds is None or self.seconds > 0, f"budget must be positive, got {self.seconds} seconds")


# λ: the smallest of 0, 0.3, 1, 2, 3, 5 at which GCG's prompts on the tiny organism have a mean token NLL within
# 1.5× of the organism's test prompts' (1.43×; 8.5× at λ = 0), beam's and random's true reward not changed beyond
# noise (benchmarks/bench_lambda.py, 20 prefixes; README "Benchmarks")
DEFAULT_LOGPROB_WEIGHT = 5.0


@dataclass(frozen=True)
class Objective(Config):
    """score = probe + logprob_weight × mean log-prob of the span − length_penalty × span tokens.

    The fluency term is on by default: without it GCG finds word salad the probe rates high and the model would
    never write (issue 12). λ is in probe units per nat: with a probe in reward points, λ = 5 trades 5 points of
    probe score for one nat of mean token NLL.
    """

    logprob_weight: float = DEFAULT_LOGPROB_WEIGHT
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


@dataclass
class ComputeMeter:
    """Forward-equivalents one search has spent, by kind (`COSTS`), against its limit (None: no limit)."""

    limit: float | None = None
    spent: dict[str, float] = field(default_factory=lambda: {kind: 0.0 for kind in COSTS})

    @property
    def total(self) -> float:
        return sum(self.spent.values())

    def left(self) -> float:
        return math.inf if self.limit is None else self.limit - self.total

    def charge(self, kind: str, units: float) -> None:
        self.spent[kind] += COSTS[kind] * units

    def require(self, kind: str, units: float) -> None:
        """Raises BudgetSpent unless `units` of `kind` and one scored candidate after them fit what is left."""
        if COSTS[kind] * units + COSTS["scored"] > self.left():
            raise BudgetSpent(f"{kind}: {units} units do not fit the {self.left():g} forward-equivalents left")


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
    meter: ComputeMeter = field(default_factory=ComputeMeter)
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
        new token each. Charged one forward-equivalent per drawn token. Near the end of a forwards budget only
        the first bases whose worst case (max_new_tokens drawn, then scored) the budget pays for are continued —
        or the first alone, cut shorter — and BudgetSpent is raised when not even one token fits."""
        if not bases:
            return []
        if self.meter.limit is not None:
            left = self.meter.left()
            full = math.floor(left / (COSTS["sampled"] * max_new_tokens + COSTS["scored"]))  # whole spans it pays for
            if full >= 1:
                bases = bases[:full]
            else:
                bases = bases[:1]
                max_new_tokens = math.floor((left - COSTS["scored"]) / COSTS["sampled"])
                if max_new_tokens < 1:
                    raise BudgetSpent(f"sampling a span does not fit the {left:g} forward-equivalents left")
        contexts = [tuple(self.target.context_ids) + tuple(b) for b in bases]
        got = sample_tokens(self.scorer.model, contexts, max_new_tokens, pad_id=self.scorer.pad_id,
                            generator=self.generator, temperature=temperature,
                            stop_ids=self.target.stop_ids if stop else (),
                            allowed=self.target.allowed if allowed is None else allowed, min_new_tokens=1)
        self.meter.charge("sampled", sum(len(new) + int(stopped) for new, stopped in got))
        return [(tuple(b) + new, stopped) for b, (new, stopped) in zip(bases, got)]

    def span_gradient(self, ids: Sequence[int]) -> torch.Tensor:
        """`[span, vocab]`: ∂ objective / ∂ one-hot of the span (computed by the scorer); charged 3
        forward-equivalents (forward + backward)."""
        self.meter.require("gradient", 1)
        grad = self.scorer.span_gradient(self.target, ids, self.objective.logprob_weight)
        self.meter.charge("gradient", 1)
        return grad

    @property
    def probe_metadata(self) -> dict[str, Any]:
        """The probe's metadata (model, hook, position, dataset, …): e.g. where Optuna mines its template from."""
        return self.scorer.metadata


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
    evaluations: int                    # candidates scored
    seconds: float = field(compare=False)
    options: dict = field(default_factory=dict, compare=False, hash=False)
    forwards: float = 0.0               # forward-equivalents spent (see Budget)
    compute: dict = field(default_factory=dict, hash=False)  # forward-equivalents by kind: scored, sampled, gradient
    prefix_probe_score: float | None = None   # the bare prefix's probe score (prompt target)
    true_reward: float | None = None          # mean true reward of answers to the best prompt (`with_truth`)
    prefix_true_reward: float | None = None   # the same for the bare prefix
    true_answers: int = 0                     # answers sampled per prompt for those two

    @property
    def probe_gain(self) -> float | None:
        """The probe's score of the best prompt over the bare prefix's."""
        return None if self.prefix_probe_score is None else self.best.probe_score - self.prefix_probe_score

    @property
    def true_gain(self) -> float | None:
        """The true reward of the best prompt's answers over the bare prefix's."""
        if self.true_reward is None or self.prefix_true_reward is None:
            return None
        return self.true_reward - self.prefix_true_reward

    @property
    def exploitation_gap(self) -> float | None:
        """probe_gain − true_gain: how much of the gain the probe promises the rater does not deliver (in reward
        units when the probe is a regression on the rater's reward, as the user_end probe is). Near 0: the search
        found what the model's reward estimate and the truth agree on; large: it found the probe's blind spots."""
        p, t = self.probe_gain, self.true_gain
        return None if p is None or t is None else p - t

    @property
    def best_text(self) -> str:
        return self.best.text

    @property
    def best_score(self) -> float:
        return self.best.score

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "probe_gain": self.probe_gain, "true_gain": self.true_gain,
                "exploitation_gap": self.exploitation_gap}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        """The inverse of to_dict (its derived gains are recomputed, not read)."""
        def found(x):
            return Found(**{**x, "ids": tuple(x["ids"])})

        kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kwargs.update(best=found(d["best"]), top=tuple(found(x) for x in d["top"]),
                      best_so_far=tuple(float(x) for x in d["best_so_far"]))
        return cls(**kwargs)


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
        budget: evaluations (int), a Budget, or {"evaluations": …, "forwards": …, "seconds": …}.
        options: strategy options (with a name or class).
        target: "prompt" (search the rest of the user's message) or "completion" (search the answer).
        position: where the probe reads; the target's default (`user_end` / the completion's end) if None.
        objective: an Objective or a dict (logprob_weight, length_penalty); the default has λ =
            DEFAULT_LOGPROB_WEIGHT.
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
        meter = ComputeMeter(self.budget.forwards)
        context = SearchContext(self.scorer, target, self.objective, seed, meter)
        start = time.perf_counter()
        strategy.setup(context)
        seen: dict[tuple[int, ...], Scored] = {}
        history: list[float] = []
        best = -math.inf
        while True:
            left = self._left(len(history), start, meter)
            if left <= 0:
                break
            try:
                candidates = list(strategy.ask(left))[:left]
            except BudgetSpent:  # a draw or gradient the budget cannot pay for
                break
            candidates = candidates[: self._affordable(meter)]  # after sampling, scoring must still fit
            if not candidates:  # the strategy has nothing more to propose
                break
            scored = self.evaluate(target, candidates, strategy.name)
            meter.charge("scored", len(scored))
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
        seconds = time.perf_counter() - start
        return SearchResult(prefix=prompt_prefix, target=self.target_kind, strategy=strategy.name, seed=seed,
                            best=top[0], top=top, best_so_far=tuple(history), evaluations=len(history),
                            seconds=seconds, options=strategy.config.to_dict(), forwards=meter.total,
                            compute=dict(meter.spent), prefix_probe_score=self._bare_prefix_score(target))

    def _left(self, used: int, start: float, meter: ComputeMeter) -> int:
        """Candidates the next ask may return: the evaluations left and, under a forwards budget, what the
        forward-equivalents left pay for at this search's cost per candidate so far (sampling and gradients
        included), so that the last ask does not draw far more than can be scored."""
        if self.budget.seconds is not None and time.perf_counter() - start >= self.budget.seconds:
            return 0
        n = 1 << 30 if self.budget.evaluations is None else self.budget.evaluations - used
        if meter.limit is not None:
            per_candidate = max(COSTS["scored"], meter.total / used) if used else COSTS["scored"]
            n = min(n, math.floor(meter.left() / per_candidate))
            if n == 0 and meter.left() >= COSTS["scored"]:
                n = 1
        return n

    @staticmethod
    def _affordable(meter: ComputeMeter) -> int:
        return 1 << 30 if meter.limit is None else math.floor(meter.left() / COSTS["scored"])

    def _bare_prefix_score(self, target: Target) -> float | None:
        """The probe's score of the prefix alone (the prompt target's message without a span; not charged)."""
        if target.kind != "prompt":
            return None
        return float(self.scorer.score_rows([target.row(())], target.position).probe[0])

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
        prefixes: prompt prefixes ("" searches from the start of the user's message), or prompts (completion target).
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
        if not isinstance(p, str) or (p and not p.strip()):
            raise RsearchError(f"whitespace-only prefix (number {i + 1}): give text, or an empty prefix to search "
                               "from the start of the user's message")
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
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        self._done: dict[int, SearchResult] = {}
        kept, damaged = [], []
        for n, line in enumerate(lines, 1):
            try:
                r = json.loads(line)
                index, result = int(r["index"]), SearchResult.from_dict(r["result"])
            except (ValueError, KeyError, TypeError, RsearchError):
                damaged.append(n)
                continue
            kept.append(line)
            self._done.setdefault(index, result)
        if kept and not resume:
            raise RsearchError(f"{self.dir} already holds {len(kept)} results: pass --resume to continue "
                               "that run, or choose another --out")
        if damaged and damaged != [len(lines)]:  # a torn last line is a crash's; anything else is damage
            logging.getLogger("rsearch.search").warning(
                f"{self.path}: {len(damaged)} damaged line(s) skipped (line {', '.join(map(str, damaged[:5]))}"
                f"{' …' if len(damaged) > 5 else ''}); their prefixes are searched again")
        if damaged:  # rewrite without them before appending
            write_text(self.path, "".join(line + "\n" for line in kept))

    def done(self) -> dict[int, SearchResult]:
        """Results already in the file, by prefix index."""
        return dict(self._done)

    def append(self, index: int, result: SearchResult) -> None:
        if index in self._done:
            return  # never duplicate a result (e.g. a retried task that had in fact finished)
        append_jsonl(self.path, {"index": index, "prefix": result.prefix, "result": result.to_dict()})
        self._done[index] = result
