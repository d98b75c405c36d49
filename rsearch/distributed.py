"""Many searches at once: Ray actors that load the model and probe once, and an in-process fallback.

This is the only module that imports Ray (and only when workers are asked for). `SearchWorker` is a plain
class; `RayPool` wraps it as actors (one GPU each where there are GPUs, else one CPU) and hands each idle
worker the next prefix. A worker that dies is restarted by Ray (`max_restarts`) and its prefix is retried, on
it or on another worker. Each finished search goes to the driver's `ResultLog` at once, so a crash loses
nothing finished, and `resume` skips what is done. `RayPool.score_rows` fans one search's candidate scoring
out to every worker (pass the pool to `Searcher(pool=…)`, or `fan_out=True` to `run_many`). Every way of
running many prefixes goes through `rsearch.searcher.run_prefixes` (resume, result stream, order).

    run_many(spec, prefixes, workers=0)               # in-process, no Ray
    run_many(spec, prefixes, workers=2)               # a local Ray cluster with 2 workers, a prefix each
    run_many(spec, prefixes, workers=2, fan_out=True)  # prefixes in turn, each search's scoring on 2 workers
    run_many(spec, prefixes, workers=2, address="auto")  # join a cluster started with `ray start`
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rsearch.chat import Encoded
from rsearch.config import check
from rsearch.errors import RsearchError
from rsearch.scorer import ProbeScorer, Scores
from rsearch.models import load_model
from rsearch.searcher import Budget, Objective, SearchResult, Searcher, run_prefixes


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker needs to rebuild the scorer and the Searcher (picklable, no model inside)."""

    probe: str                          # probe file
    strategy: str | type = "beam"       # registered name or Strategy class
    options: dict = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    objective: Objective = field(default_factory=Objective)
    target: str = "prompt"
    position: str | None = None
    seed: int = 0
    top_k: int = 10
    model: str | None = None            # overrides the model the probe names
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 32
    threads: int | None = None          # torch threads per CPU worker (None: leave as is)

    def scorer(self) -> ProbeScorer:
        model = tokenizer = None
        if self.model:
            model, tokenizer = load_model(self.model, dtype=self.dtype, device=self.device)
        return ProbeScorer.from_file(self.probe, model, tokenizer, device=self.device, dtype=self.dtype,
                                     batch_size=self.batch_size)

    def searcher(self, scorer: ProbeScorer, pool=None) -> Searcher:
        return Searcher(scorer, self.strategy, self.budget, options=dict(self.options), target=self.target,
                        position=self.position, objective=self.objective, seed=self.seed, top_k=self.top_k,
                        pool=pool)


class SearchWorker:
    """Loads the model and probe once; runs searches and scores rows on request."""

    def __init__(self, spec: SearchSpec):
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.scorer = spec.scorer()
        self.searcher = spec.searcher(self.scorer)

    def ping(self) -> int:
        return os.getpid()

    def search(self, index: int, prefix: str) -> tuple[int, dict[str, Any]]:
        return index, self.searcher.optimize(prefix).to_dict()

    def score_rows(self, rows: Sequence[Encoded], position, spans) -> tuple[list[float], list[float] | None]:
        s = self.scorer.score_rows(rows, position, spans)
        return s.probe.tolist(), None if s.logprob is None else s.logprob.tolist()


# ----- Ray -----

def _ray():
    try:
        import ray
    except ImportError:
        raise RsearchError("--workers needs Ray: pip install 'ray[default]'") from None
    return ray


def ensure_ray(workers: int, address: str | None = None) -> bool:
    """Connects to Ray: an existing connection, the cluster at `address`, or a new local one sized for the
    workers. Returns True if this call started it (the caller then shuts it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            gpus = torch.cuda.device_count()
            ray.init(num_cpus=max(1, workers), num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False)
    except ConnectionError as e:
        raise RsearchError(f"cannot join the Ray cluster at {address!r}: {str(e).splitlines()[0]}") from None
    return True


class RayPool:
    """`n` SearchWorker actors, restarted by Ray when they die.

    Args:
        spec: what each worker loads and runs.
        workers: number of actors.
        address: join this cluster ("auto": the one `ray start` began); a local one is started if needed.
        max_restarts: restarts per actor before it is replaced.
    """

    def __init__(self, spec: SearchSpec, workers: int, address: str | None = None, max_restarts: int = 4):
        check(workers >= 1, f"workers must be at least 1 for a Ray pool, got {workers}")
        ray = _ray()
        self.ray = ray
        self.started = ensure_ray(workers, address)
        self.spec = spec
        gpus = 1 if torch.cuda.is_available() and spec.device in ("auto", "cuda") else 0
        self._actor_cls = ray.remote(SearchWorker).options(
            num_cpus=0 if gpus else 1, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=0)
        self.actors = [self._actor_cls.remote(spec) for _ in range(workers)]
        self.wait_ready()

    def wait_ready(self, timeout: float = 600) -> None:
        """Blocks until every actor has loaded its model (surfacing a load error as one line)."""
        try:
            self.ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
        except self.ray.exceptions.RayActorError as e:
            cause = getattr(e, "cause", None) or e
            msg = str(cause).strip().splitlines()
            raise RsearchError(f"a worker failed to start: {msg[-1] if msg else type(cause).__name__}") from None

    def _replace_if_dead(self, k: int) -> None:
        """A restarting actor takes new calls once it is back; a dead one (restarts spent) is replaced."""
        try:
            self.ray.get(self.actors[k].ping.remote(), timeout=300)
        except self.ray.exceptions.RayActorError:
            self.actors[k] = self._actor_cls.remote(self.spec)

    def map_search(self, todo: Sequence[tuple[int, str]], on_result: Callable[[int, SearchResult], None],
                   max_retries: int = 3) -> None:
        """Runs every (index, prefix), one at a time per worker, calling on_result as each finishes."""
        ray = self.ray
        queue = list(todo)
        tries: dict[int, int] = {}
        running: dict[Any, tuple[int, int, str]] = {}  # object ref → (actor slot, index, prefix)
        idle = list(range(len(self.actors)))
        while queue or running:
            while queue and idle:
                k = idle.pop(0)
                index, prefix = queue.pop(0)
                running[self.actors[k].search.remote(index, prefix)] = (k, index, prefix)
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            k, index, prefix = running.pop(ref)
            try:
                _, result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                # the worker died mid-search: retry the prefix (the actor is being restarted by Ray)
                tries[index] = tries.get(index, 0) + 1
                if tries[index] > max_retries:
                    raise RsearchError(f"prefix {index} ({prefix[:40]!r}) failed on {max_retries + 1} workers")
                queue.insert(0, (index, prefix))
                self._replace_if_dead(k)
                idle.append(k)
                continue
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
                if isinstance(cause, RsearchError):
                    raise RsearchError(str(cause)) from None
                raise
            idle.append(k)
            on_result(index, SearchResult.from_dict(result))

    def score_rows(self, rows: Sequence[Encoded], position, spans=None) -> Scores:
        """Scores rows on every worker at once (one contiguous chunk each)."""
        n = len(self.actors)
        size = -(-len(rows) // n)
        chunks = [(i, min(i + size, len(rows))) for i in range(0, len(rows), size)]
        refs = [self.actors[k].score_rows.remote(list(rows[a:b]), position, None if spans is None else list(spans[a:b]))
                for k, (a, b) in enumerate(chunks)]
        got = self.ray.get(refs)
        probe = torch.tensor([x for p, _ in got for x in p])
        logprob = torch.tensor([x for _, lp in got for x in lp]) if spans is not None else None
        return Scores(probe, logprob)

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()


# ----- the entry point -----

def run_many(spec: SearchSpec, prefixes: Sequence[str], *, workers: int = 0, address: str | None = None,
             fan_out: bool = False, run_dir: str | Path | None = None, resume: bool = False,
             on_result: Callable[[int, SearchResult], None] | None = None, scorer: ProbeScorer | None = None,
             pool: RayPool | None = None) -> list[SearchResult]:
    """Searches every prefix (`rsearch.searcher.run_prefixes`); results in input order, each streamed to
    `run_dir/results.jsonl` when found.

    Args:
        spec: the search (probe, strategy, budget, …).
        prefixes: prompt prefixes (or prompts, for the completion target).
        workers: 0 runs in-process without Ray; N ≥ 1 uses N Ray actors.
        address: a Ray cluster to join ("auto"); a local cluster is started otherwise.
        fan_out: with Ray, search the prefixes one after another here and spread each search's candidate
            scoring over the workers (instead of one prefix per worker).
        run_dir: where results stream; with `resume`, prefixes already there are skipped.
        on_result: called with (index, result) as each search finishes (after it is written).
        scorer: an already loaded scorer for the in-process paths.
        pool: an existing RayPool to use (it is left running).
    """
    check(workers >= 0, f"--workers must be ≥ 0, got {workers}")

    def map_search(todo: Sequence[tuple[int, str]], found: Callable[[int, SearchResult], None]) -> None:
        # models load and workers start only once the prefixes are checked and something is left to do
        if workers == 0 and address is None and pool is None:
            return spec.searcher(scorer or spec.scorer()).map_search(todo, found)
        workers_pool = pool or RayPool(spec, max(1, workers), address)
        try:
            if fan_out:
                spec.searcher(scorer or spec.scorer(), pool=workers_pool).map_search(todo, found)
            else:
                workers_pool.map_search(todo, found)
        finally:
            if pool is None:
                workers_pool.shutdown()

    return run_prefixes(prefixes, map_search, run_dir=run_dir, resume=resume, on_result=on_result)
