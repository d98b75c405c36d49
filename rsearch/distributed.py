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

The study's heavy stages shard their rows the same way: `ShardPool` runs a task (`capture_task`, `sample_task`,
`logprob_task`) over shards of the batches one process would run, on `ShardWorker` actors that load each model
once, and yields the results in order (`sharded_capture` for the activation store, `sharded_sampler` and
`sharded_logprobs` for `rsearch.lm`; `ShardMaps` bundles the last two for compare). A shard's result can be kept
on disk as it arrives, so a rerun resumes per shard.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from rsearch.chat import Encoded
from rsearch.config import check
from rsearch.errors import RsearchError, one_line
from rsearch.hooks import parse_hook
from rsearch.positions import parse_position
from rsearch.scorer import ProbeScorer, Scores
from rsearch.models import load_model, resolve_device
from rsearch.searcher import Budget, Objective, SearchResult, Searcher, run_prefixes
from rsearch.lm import ModelCache, batch_logprobs, decode_seed_batches
from rsearch.io_utils import atomic_path
from rsearch.activations import capture_positions, collate

log = logging.getLogger("rsearch.distributed")


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


LOOPBACK = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT = 30.0
_warned_no_auth: set[str] = set()


def start_local_ray(num_cpus: int, **kwargs: Any) -> None:
    """Starts a Ray cluster on this machine, every one of its sockets bound to 127.0.0.1.

    Ray binds its servers to all interfaces and advertises the machine's network address unless it believes
    clusters are disabled (its RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER switch, read into
    `ray_constants.ENABLE_RAY_CLUSTER`): then the node address resolves to the loopback one. A cluster only
    this process uses must not be reachable from the network (Ray runs whatever code it is sent).
    """
    ray = _ray()
    from ray._private import ray_constants

    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # the raylet and its workers inherit it
    on_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit; keep the CLI's
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host=LOOPBACK, _node_ip_address=LOOPBACK,
                 log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    finally:
        if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved_env


def _reachable(address: str, timeout: float) -> None:
    """Fails fast (one line) when nothing listens at a host:port cluster address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RsearchError(f"--ray-address {address!r}: expected HOST:PORT or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10)).close()
    except OSError as e:
        raise RsearchError(f"cannot join the Ray cluster at {address!r}: nothing answers there "
                           f"({one_line(e)})") from None


_PROBE = """
import logging, sys
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
print("token-auth" if is_token_auth_enabled() else "no-auth", flush=True)
ray.shutdown()
"""


def join_ray(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Joins the cluster at `address` ("auto": the one `ray start` began) within `timeout` seconds, or fails
    with one line; warns once when the cluster runs without token authentication.

    ray.init retries a silent address for minutes, and its native client can only be stopped with its process:
    so a child process tries first, killed after `timeout`, and this one connects once the child got through.
    """
    ray = _ray()
    check(timeout > 0, f"--ray-timeout must be positive, got {timeout}")
    if address != "auto":
        _reachable(address, timeout)
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                               timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RsearchError(f"cannot join the Ray cluster at {address!r}: no answer within {timeout:g} s "
                           "(set --ray-timeout to wait longer)") from None
    if probe.returncode != 0:
        said = [line for line in probe.stderr.splitlines() if line.strip()]
        raise RsearchError(f"cannot join the Ray cluster at {address!r}: "
                           f"{one_line(said[-1] if said else f'exit code {probe.returncode}')}")
    on_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit; keep the CLI's
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise RsearchError(f"cannot join the Ray cluster at {address!r}: {one_line(e)}") from None
    finally:
        if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
    if "no-auth" in probe.stdout and address not in _warned_no_auth:
        _warned_no_auth.add(address)
        log.warning(f"the Ray cluster at {address!r} runs without token authentication: anyone who can reach it "
                    "can run code on it (start it with RAY_AUTH_MODE=token)")


def ensure_ray(workers: int, address: str | None = None, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> bool:
    """Connects to Ray: an existing connection, the cluster at `address`, or a new local one (bound to
    127.0.0.1) sized for the workers. Returns True if this call started it (the caller then shuts it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address:
        join_ray(address, timeout)
    else:
        start_local_ray(max(1, workers), num_gpus=torch.cuda.device_count())
    return True


class _ActorPool:
    """What both pools share: their actors (one class, restarted by Ray when they die), replacing a dead one, and
    stopping them all (and the local cluster this pool started)."""

    ray: Any
    started: bool
    actors: list

    def _spawn(self, worker_cls: type, args: tuple, workers: int, gpus: int, max_restarts: int) -> None:
        self._args = args
        self._actor_cls = self.ray.remote(worker_cls).options(
            num_cpus=0 if gpus else 1, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=0)
        self.actors = [self._actor_cls.remote(*args) for _ in range(workers)]

    def _replace_if_dead(self, k: int) -> None:
        """A restarting actor takes new calls once it is back; a dead one (restarts spent) is replaced."""
        try:
            self.ray.get(self.actors[k].ping.remote(), timeout=300)
        except self.ray.exceptions.RayActorError:
            self.actors[k] = self._actor_cls.remote(*self._args)

    def _work(self, keys: Sequence[Any], submit: Callable[[Any, Any], Any], what: str,
              max_retries: int = 3) -> Iterator[tuple[Any, Any]]:
        """The one work queue: `submit(actor, key)` → an object ref, one key at a time per idle actor; yields
        (key, value) as each finishes. A key whose actor died is retried first on the replaced actor (at most
        `max_retries` times); an RsearchError raised in a worker surfaces as itself. On Ctrl-C the keys already
        finished are yielded before the interrupt goes on, so none is lost."""
        ray = self.ray
        queue = list(keys)
        tries: dict[Any, int] = {}
        running: dict[Any, tuple[int, Any]] = {}  # object ref → (actor slot, key)
        idle = list(range(len(self.actors)))
        while queue or running:
            while queue and idle:
                k, key = idle.pop(0), queue.pop(0)
                running[submit(self.actors[k], key)] = (k, key)
            try:
                ready: list = []
                while not ready:  # short waits, so SIGINT/SIGTERM are handled within a fraction of a second
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            except KeyboardInterrupt:
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for ref in done:
                    try:
                        value = ray.get(ref, timeout=1)
                    except Exception:  # a failed task has nothing to keep
                        continue
                    yield running[ref][1], value
                raise
            k, key = running.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                tries[key] = tries.get(key, 0) + 1
                if tries[key] > max_retries:
                    raise RsearchError(f"{what(key)} failed on {max_retries + 1} workers") from None
                queue.insert(0, key)
                self._replace_if_dead(k)
                idle.append(k)
                continue
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, RsearchError):
                    raise RsearchError(str(cause)) from None
                raise
            idle.append(k)
            yield key, value

    def _stop(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False


class RayPool(_ActorPool):
    """`n` SearchWorker actors, restarted by Ray when they die.

    Args:
        spec: what each worker loads and runs.
        workers: number of actors.
        address: join this cluster ("auto": the one `ray start` began); a local one is started if needed.
        max_restarts: restarts per actor before it is replaced.
        connect_timeout: seconds to wait for the cluster at `address` before failing.
    """

    def __init__(self, spec: SearchSpec, workers: int, address: str | None = None, max_restarts: int = 4,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
        check(workers >= 1, f"workers must be at least 1 for a Ray pool, got {workers}")
        ray = _ray()
        self.ray = ray
        self.started = ensure_ray(workers, address, connect_timeout)
        self.spec = spec
        gpus = 1 if torch.cuda.is_available() and spec.device in ("auto", "cuda") else 0
        self._spawn(SearchWorker, (spec,), workers, gpus, max_restarts)
        self.wait_ready()

    def wait_ready(self, timeout: float = 600) -> None:
        """Blocks until every actor has loaded its model (surfacing a load error as one line)."""
        try:
            self.ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
        except self.ray.exceptions.RayActorError as e:
            cause = getattr(e, "cause", None) or e
            msg = str(cause).strip().splitlines()
            raise RsearchError(f"a worker failed to start: {msg[-1] if msg else type(cause).__name__}") from None

    def map_search(self, todo: Sequence[tuple[int, str]], on_result: Callable[[int, SearchResult], None],
                   max_retries: int = 3) -> None:
        """Runs every (index, prefix), one at a time per worker, calling on_result as each finishes."""
        for (index, _), (_, result) in self._work(
                list(todo), lambda actor, job: actor.search.remote(*job),
                lambda job: f"prefix {job[0]} ({job[1][:40]!r})", max_retries):
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
        self._stop()


# ----- the entry point -----

def run_many(spec: SearchSpec, prefixes: Sequence[str], *, workers: int = 0, address: str | None = None,
             fan_out: bool = False, run_dir: str | Path | None = None, resume: bool = False,
             on_result: Callable[[int, SearchResult], None] | None = None, scorer: ProbeScorer | None = None,
             pool: RayPool | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> list[SearchResult]:
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
        connect_timeout: seconds to wait for the cluster at `address` before failing with one line.
    """
    check(workers >= 0, f"--workers must be ≥ 0, got {workers}")

    def map_search(todo: Sequence[tuple[int, str]], found: Callable[[int, SearchResult], None]) -> None:
        # models load and workers start only once the prefixes are checked and something is left to do
        if workers == 0 and address is None and pool is None:
            return spec.searcher(scorer or spec.scorer()).map_search(todo, found)
        workers_pool = pool or RayPool(spec, max(1, workers), address, connect_timeout=connect_timeout)
        try:
            if fan_out:
                spec.searcher(scorer or spec.scorer(), pool=workers_pool).map_search(todo, found)
            else:
                workers_pool.map_search(todo, found)
        finally:
            if pool is None:
                workers_pool.shutdown()

    return run_prefixes(prefixes, map_search, run_dir=run_dir, resume=resume, on_result=on_result)


# ----- sharded maps over rows: extraction, sampling, log-probs on many workers -----

class ShardWorker:
    """Loads models on first use (by name, kept for later shards) and runs shard tasks on them."""

    def __init__(self, dtype: str, device: str, threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        self.models = ModelCache(dtype, device)

    def ping(self) -> int:
        return os.getpid()

    def run(self, task: Callable, model: str, revision: str | None, payload: Any) -> Any:
        loaded, tokenizer = self.models.get(model, revision)
        return task(loaded, tokenizer, payload)


class ShardPool(_ActorPool):
    """`workers` Ray actors that run `task(model, tokenizer, shard)` over shards of rows; results in shard order.

    Each idle worker takes the next shard; a worker that dies is restarted by Ray and its shard is retried.
    Shards are formed by the caller from the same batches one process would run (the extraction's length-sorted
    batches, the sampling's seed batches), so the merged result is the one-worker result.

    Args:
        workers: number of actors (one GPU each where there are GPUs, else one CPU each).
        address: join this cluster ("auto": the one `ray start` began); a local one is started if needed.
        dtype, device: how workers load models.
        threads: torch threads per worker (None: leave as is).
    """

    def __init__(self, workers: int, address: str | None = None, *, dtype: str = "float32", device: str = "auto",
                 threads: int | None = None, max_restarts: int = 2,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, start_timeout: float = 600):
        check(workers >= 1, f"--workers must be at least 1 for a Ray pool, got {workers}")
        self.ray = _ray()
        self.started = ensure_ray(workers, address, connect_timeout)
        # one GPU per worker where the cluster has GPUs (the driver may be a CPU-only head node)
        gpus = 1 if device.startswith("cuda") or (device == "auto" and
                                                   self.ray.cluster_resources().get("GPU", 0) >= 1) else 0
        self.workers = workers  # how the callers shard: fixed, whatever happens to the actors
        self._spawn(ShardWorker, (dtype, device, threads), workers, gpus, max_restarts)
        try:
            self.ray.get([a.ping.remote() for a in self.actors], timeout=start_timeout)
        except self.ray.exceptions.RayActorError as e:
            self.close()
            raise RsearchError(f"a worker failed to start: {one_line(getattr(e, 'cause', None) or e)}") from None
        except self.ray.exceptions.GetTimeoutError:
            self.close()
            raise RsearchError(f"{workers} workers did not start within {start_timeout:g} s: does the cluster have "
                               f"{workers} free {'GPUs' if gpus else 'CPUs'}?") from None

    def __enter__(self) -> "ShardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, task: Callable, model: str, shards: Sequence[Any], *, revision: str | None = None,
            cache_dir: str | Path | None = None, max_retries: int = 3):
        """Yields `task(model, tokenizer, shard)` for every shard, in order, as soon as it and those before it are
        done. With `cache_dir`, each shard's result is saved when it arrives (named by a hash of the task, model
        and shard) and a rerun loads it instead of computing it again: resumable per shard."""
        ray = self.ray
        files = [_shard_file(cache_dir, task, model, revision, shard) if cache_dir else None for shard in shards]
        results: dict[int, Any] = {i: _load_shard(f) for i, f in enumerate(files) if f is not None and f.is_file()}
        sent: dict[int, Any] = {}  # shard → its object ref: sent once, not once per retry

        def submit(actor, j: int):
            sent.setdefault(j, ray.put(shards[j]))
            return actor.run.remote(task, model, revision, sent[j])

        done = self._work([i for i in range(len(shards)) if i not in results], submit, lambda j: f"shard {j}",
                          max_retries)
        for i in range(len(shards)):
            while i not in results:
                j, value = next(done)
                sent.pop(j, None)
                if files[j] is not None:
                    _save_shard(files[j], value)
                results[j] = value
            yield results.pop(i)

    def close(self) -> None:
        self._stop()


def chunks(items: Sequence[Any], n_shards: int) -> list[list[Any]]:
    """Consecutive runs of `items`, at most `n_shards` of them, of near-equal size."""
    size = max(1, -(-len(items) // max(1, n_shards)))
    return [list(items[a:a + size]) for a in range(0, len(items), size)]


def _shard_file(cache_dir: str | Path, task: Callable, model: str, revision: str | None, shard: Any) -> Path:
    import hashlib
    import pickle

    h = hashlib.sha256(f"{task.__module__}.{task.__qualname__}|{model}|{revision}".encode())
    h.update(pickle.dumps(shard, protocol=4))  # hashing only: nothing is ever unpickled from disk
    return Path(cache_dir) / f"shard-{h.hexdigest()[:24]}.pt"


def _save_shard(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(value, tmp)


def _load_shard(path: Path) -> Any:
    return torch.load(path, weights_only=True)


# tasks (module-level functions, so workers import them by name)

def capture_task(model, tokenizer, payload) -> list[dict]:
    """payload: (batches of Encoded rows, hooks, positions, pad id) → per batch {(hook, position): [rows, d]}."""
    batches, hooks, positions, pad_id = payload
    with torch.no_grad():
        return [{key: v.float().cpu() for key, v in capture_positions(model, collate(rows, pad_id), hooks,
                                                                          positions).items()} for rows in batches]


def sample_task(model, tokenizer, payload) -> list[list[tuple[list[int], bool]]]:
    """payload: ([(seed batch index, contexts)], settings) → per seed batch [(new token ids, ended)]."""
    batches, settings = payload
    got = decode_seed_batches(model, batches, **settings)
    return [[(list(toks), ended) for toks, ended in batch] for batch in got]


def logprob_task(model, tokenizer, payload) -> list[torch.Tensor]:
    """payload: (batches of (rows, spans), pad id, mean) → per batch `[rows]` log-probs."""
    batches, pad_id, mean = payload
    return [batch_logprobs(model, rows, spans, pad_id=pad_id, mean=mean) for rows, spans in batches]


def sharded_capture(pool: ShardPool, model: str, revision: str | None, rows: Sequence[Encoded], hooks, positions,
                    pad_id: int, shards_per_worker: int = 4):
    """A `capture_batches` for `rsearch.activations.build_store`: the store's batches captured on the pool."""
    hooks = [parse_hook(h) for h in hooks]
    positions = [parse_position(p) for p in positions]

    def capture_batches(batches: Sequence[Sequence[int]]):
        groups = chunks(list(batches), shards_per_worker * pool.workers)
        payloads = [([[rows[i] for i in idx] for idx in group], hooks, positions, pad_id)
                    for group in groups]
        for got in pool.map(capture_task, model, payloads, revision=revision):
            yield from got

    return capture_batches


def sharded_sampler(pool: ShardPool, model: str, revision: str | None = None, cache_dir: str | Path | None = None,
                    shards_per_worker: int = 4):
    """A `map_batches` for `rsearch.lm.sample_completions`: its seed batches decoded on the pool."""

    def map_batches(batches: list[tuple[int, list]], settings: dict) -> list:
        groups = chunks(batches, shards_per_worker * pool.workers)
        out = []
        for got in pool.map(sample_task, model, [(g, settings) for g in groups], revision=revision,
                            cache_dir=cache_dir):
            out += [[(tuple(toks), bool(ended)) for toks, ended in batch] for batch in got]
        return out

    return map_batches


def sharded_logprobs(pool: ShardPool, model: str, revision: str | None = None, cache_dir: str | Path | None = None,
                     shards_per_worker: int = 4):
    """A `map_batches` for `rsearch.lm.sequence_logprobs`: its length-sorted batches run on the pool."""

    def map_batches(batches: list[tuple[list, list]], pad_id: int, mean: bool) -> list[torch.Tensor]:
        groups = chunks(batches, shards_per_worker * pool.workers)
        out = []
        for got in pool.map(logprob_task, model, [(g, pad_id, mean) for g in groups], revision=revision,
                            cache_dir=cache_dir):
            out += got
        return out

    return map_batches


class ShardMaps:
    """A job's sharded sampling and log-probs over one `ShardPool`, started on first use.

    Args:
        workers, address, dtype, device: see `ShardPool` (CPU workers run one torch thread each).
        cache_dir: where each shard's result is kept as it arrives (a rerun resumes from there).
    """

    def __init__(self, workers: int, address: str | None = None, *, dtype: str = "float32", device: str = "auto",
                 cache_dir: str | Path | None = None):
        self.workers, self.address, self.dtype, self.device, self.cache_dir = workers, address, dtype, device, cache_dir
        self._pool: ShardPool | None = None

    @property
    def pool(self) -> ShardPool:
        if self._pool is None:
            threads = 1 if resolve_device(self.device) == "cpu" else None
            self._pool = ShardPool(max(1, self.workers), self.address, dtype=self.dtype, device=self.device,
                                   threads=threads)
        return self._pool

    def sampler(self, model: str, revision: str | None = None):
        return sharded_sampler(self.pool, model, revision, self.cache_dir)

    def logprobs(self, model: str, revision: str | None = None):
        return sharded_logprobs(self.pool, model, revision, self.cache_dir)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
