"""`rsearch run`: search prompts (or completions) that a probe rates high.

    rsearch run --strategy beam --probe layer24.pt              # from the start of the user's message
    rsearch run --strategy beam --probe layer24.pt --prefix "please ," --budget 256 --out runs/beam
    rsearch run --strategy gcg --probe p.safetensors --prefixes prefixes.txt --workers 2 --set n_tokens=8
    rsearch run --strategy optuna --probe p.pt --prefix "hey ," --set template=my_template.yaml

Writes to the run directory: run.json (the settings), results.jsonl (one line per finished prefix, as soon as
it is found), summary.json and best_so_far_<strategy>.png (best-so-far against evaluations). `--resume`
continues a run that stopped, skipping the prefixes already in results.jsonl.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rsearch.config import (Config, add_config_arguments, check, check_device, check_positive, config_from_args,
                            load_yaml, runtime_fields, setting)
from rsearch.errors import RsearchError, one_line
from rsearch.io_utils import check_out_dir, output_dir, save_figure, write_json
from rsearch.searcher import DEFAULT_LOGPROB_WEIGHT, Budget, Objective, SearchResult
from rsearch.models import load_config, load_model, load_tokenizer, resolve_dtype
from rsearch.probes import load_probe
from rsearch.scorer import probe_model_mismatch
from rsearch.chat import context_length, encode_conversation
from rsearch.distributed import RayPool, SearchSpec, ensure_ray, run_many
from rsearch.strategies.base import make_strategy
from rsearch.positions import parse_position
from rsearch.raters import check_spec, load_rater
from rsearch.analysis.stats import paired_summary
from rsearch.lm import sample_completions

log = logging.getLogger("rsearch.run")


@dataclass(frozen=True)
class RunConfig(Config):
    """Settings of `rsearch run`; each field's help is its flag's. Runtime-only fields (where and how it runs)
    may change on --resume; the prefixes and strategy options are keyed by their content (run.json's
    prefixes_sha and strategy_options), not by the flags that gave them."""

    probe: str = setting("", help="probe file (.pt or .safetensors) written by train-probe")
    strategy: str = setting("beam", help="beam, gcg, optuna, random, or a strategy from outside the package as "
                            "module.path:Class")
    prefix: tuple[str, ...] = setting((), repeat=True, runtime=True, metavar="TEXT",
                                      help="start of the user's message (repeatable); with neither --prefix nor "
                                      "--prefixes, a prompt search starts from an empty prefix: the start of the "
                                      "user's message")
    prefixes: str = setting("", runtime=True, metavar="FILE",
                            help="a file of prefixes, one per line (.jsonl: a 'prefix' key)")
    target: str = setting("prompt", choices=("prompt", "completion"),
                          help="search the rest of the user's message (prompt) or the assistant's answer")
    position: str | None = setting(None, help="where the probe reads (default: user_end for prompt, the answer's end)")
    budget: int = setting(256, help="scored candidates per prefix")
    forwards: float | None = setting(None, help="also stop each search after this many forward-equivalents (a "
                                     "scored candidate or a sampled token 1, a gradient 3)")
    seconds: float | None = setting(None, help="also stop each search after this many seconds")
    logprob_weight: float = setting(DEFAULT_LOGPROB_WEIGHT, help="λ: add λ × mean log-prob of the searched span "
                                    "(stay in the model's distribution; 0 turns it off)")
    length_penalty: float = setting(0.0, help="subtract this per span token")
    sets: tuple[str, ...] = setting((), flag="--set", repeat=True, runtime=True, metavar="KEY=VALUE",
                                    help="a strategy option (repeatable), e.g. --set width=8")
    options: str = setting("", runtime=True, metavar="YAML", help="strategy options from a YAML mapping (or its "
                           "section named after the strategy); --set wins")
    workers: int = setting(0, runtime=True, help="Ray workers (0: in-process, no Ray)")
    ray_address: str | None = setting(None, runtime=True,
                                      help="join a Ray cluster ('auto': the one `ray start` began)")
    ray_timeout: float = setting(30.0, runtime=True, help="seconds to wait for the cluster at --ray-address")
    fan_out: bool = setting(False, runtime=True,
                            help="score each search's candidates on all workers (for one large search)")
    out: str = setting("", runtime=True, help="run directory (default runs/<strategy>-<hash of the settings>)")
    resume: bool = setting(False, runtime=True, help="continue the run in --out, skipping finished prefixes")
    seed: int = setting(0)
    top_k: int = setting(10, help="candidates kept per prefix and shown")
    model: str | None = setting(None, help="model to read: hub id, HF folder, .gguf file or "
                                        "smollm2-135m-instruct (default: the one the probe names)")
    device: str = setting("auto", runtime=True)
    dtype: str = setting("float32")
    batch_size: int = setting(32, runtime=True, help="rows per scoring forward")
    rater: str = setting("none", help="check what was found against a rater (tasks, organism, a reward model "
                         "directory, module.path:callable): a found prompt by the rated answers sampled from the "
                         "model, beside its bare prefix's; a found completion directly (none: no check)")
    check_samples: int = setting(4, help="answers sampled per found prompt (and per bare prefix) for --rater")
    max_new_tokens: int = setting(48, help="length cap of those answers")

    def __post_init__(self) -> None:
        check_spec(self.rater)
        check(self.rater != "auto", "--rater auto: name the rater (tasks, organism, …) or none")
        check(self.check_samples >= 1 and self.max_new_tokens >= 1, "--check-samples and --max-new-tokens: ≥ 1")
        check(self.workers >= 0, f"--workers must be ≥ 0, got {self.workers}")
        check(self.top_k >= 1, f"--top-k must be at least 1, got {self.top_k}")
        check(self.ray_timeout > 0, f"--ray-timeout must be positive, got {self.ray_timeout}")
        check_positive(**{"--batch-size": self.batch_size})
        check_device(self.device, "--device")
        resolve_dtype(self.dtype)


def add_arguments(parser) -> None:
    add_config_arguments(parser, RunConfig, config_file="YAML file (top-level keys, or a `run:` section)")


# ----- inputs -----

def parse_sets(items: list[str]) -> dict[str, Any]:
    """`key=value` strings → a dict, values read as YAML scalars (8 → int, true → bool, a,b → str)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RsearchError(f"--set {item!r}: expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out[key.strip()] = value if isinstance(parsed, (dict, list)) else parsed
    return out


def file_safe(name: str) -> str:
    """A strategy name or module.path:Class spec as part of a file name."""
    return re.sub(r"[^\w.-]", "_", name)


def strategy_options(args: RunConfig) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.options:
        data = load_yaml(args.options)
        section = data.get(args.strategy)
        options.update(section if isinstance(section, dict) else data)
    options.update(parse_sets(args.sets))
    return options


def read_prefixes(args: RunConfig) -> list[str]:
    prefixes = list(args.prefix)
    if args.prefixes:
        path = Path(args.prefixes)
        if not path.is_file():
            raise RsearchError(f"prefixes file not found: {path}")
        try:
            lines = path.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise RsearchError(f"{path}: not UTF-8 text (byte {e.start})") from None
        if path.suffix == ".jsonl":
            for n, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        value = json.loads(line)["prefix"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        value = None
                    if not isinstance(value, str):
                        raise RsearchError(f"{path}:{n}: expected a JSON object with a 'prefix' string")
                    prefixes.append(value)
        else:
            prefixes += [line for line in lines if line.strip()]
    if not prefixes and not args.prefixes:
        if args.target == "completion":
            raise RsearchError("no prefix: the completion target needs the user's message (--prefix TEXT or "
                               "--prefixes FILE)")
        return [""]  # search from the start of the user's message
    if not prefixes:
        raise RsearchError(f"{args.prefixes}: no prefix in the file")
    for i, p in enumerate(prefixes):
        if not p.strip() and (p or args.target == "completion"):
            raise RsearchError(f"{'whitespace-only' if p else 'empty'} prefix (number {i + 1}): give the start "
                               "of a user message, or no --prefix to search from its start")
    return prefixes


def check_probe(args: RunConfig, prefixes: list[str] = ()) -> dict[str, Any]:
    """Reads the probe's metadata and checks it fits the model (from its config alone, before any worker), and
    that every prefix leaves room in the model's context."""
    probe, meta = load_probe(args.probe)
    name = args.model or meta.get("model")
    if not name:
        raise RsearchError(f"{args.probe}: the probe names no model; pass --model")
    try:
        revision = None if args.model else meta.get("revision")
        cfg = load_config(name, revision=revision)
    except (OSError, ValueError) as e:
        raise RsearchError(f"cannot load the config of model {name!r}: {one_line(e)}") from None
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
    reason = probe_model_mismatch({"d_model": probe.d_model, **meta}, hidden, layers, name)
    if reason:
        raise RsearchError(reason)
    if prefixes:
        check_prefix_lengths(name, cfg, prefixes, None if args.model else meta.get("revision"))
    return meta


def check_prefix_lengths(name: str, model_config, prefixes: list[str], revision: str | None) -> None:
    """Each prefix, rendered as the user's message, must leave the search room in the model's context."""
    limit = context_length(model_config)
    if limit is None:
        return
    try:
        tokenizer = load_tokenizer(name, revision=revision)
    except (OSError, ValueError) as e:
        raise RsearchError(f"cannot load the tokenizer of model {name!r}: {one_line(e)}") from None
    for i, prefix in enumerate(prefixes):
        n = len(encode_conversation(tokenizer, prefix))
        if n >= limit:
            raise RsearchError(f"prefix {i + 1} ({prefix[:30]!r}…) is {n} tokens with the chat template, no room "
                               f"left in the model's context of {limit}; shorten it")


def run_settings(cfg: RunConfig, options: dict, prefixes: list[str]) -> dict[str, Any]:
    """run.json: the settings, with the prefixes and strategy options by content."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("prefix", "prefixes", "sets", "options")}
    d["probe"] = str(Path(cfg.probe).resolve())
    d["strategy_options"] = options
    d["prefixes_sha"] = hashlib.sha256("\n".join(prefixes).encode()).hexdigest()[:16]
    d["n_prefixes"] = len(prefixes)
    return d


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The part of run.json that decides the results (a resumed run must match it)."""
    runtime = runtime_fields(RunConfig)
    return {k: v for k, v in config.items() if k not in runtime}


def run_directory(cfg: RunConfig, config: dict[str, Any]) -> Path:
    if cfg.out:
        return Path(cfg.out)
    digest = hashlib.sha256(json.dumps(result_settings(config), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{file_safe(cfg.strategy)}-{digest}"


def check_resume(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    saved = run_dir / "run.json"
    if not saved.exists():
        return
    if not resume:
        if (run_dir / "results.jsonl").exists():
            raise RsearchError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
        return
    old = json.loads(saved.read_text())
    for k, v in result_settings(config).items():
        if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(v, sort_keys=True, default=str):
            raise RsearchError(f"--resume with different settings: {k} was {old.get(k)!r}, now {v!r}")


# ----- outputs -----

def table(results: list[SearchResult], top: int) -> str:
    """The best candidates: every kept candidate for one prefix, the best per prefix for many."""
    if len(results) == 1:
        rows = [(results[0], f) for f in results[0].top][:top]
    else:
        rows = sorted(((r, r.best) for r in results), key=lambda x: -x[1].score)
    lines = [f"{'#':>3}  {'score':>9}  {'probe':>9}  {'logprob':>8}  {'evals':>5}  text"]
    for i, (r, f) in enumerate(rows, 1):
        lp = f"{f.logprob:8.3f}" if f.logprob is not None else f"{'-':>8}"
        lines.append(f"{i:>3}  {f.score:9.4f}  {f.probe_score:9.4f}  {lp}  {r.evaluations:>5}  {f.prompt!r}")
    return "\n".join(lines)


def plot(results: list[SearchResult], path: Path, title: str) -> None:
    """Best-so-far against evaluations, one line per prefix and their mean; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    curves = [r.best_so_far for r in results if r.best_so_far]
    for c in curves:
        ax.plot(range(1, len(c) + 1), c, color="tab:blue", alpha=0.25 if len(curves) > 1 else 1.0, lw=1)
    if len(curves) > 1:
        n = max(len(c) for c in curves)
        mean = [sum(c[min(i, len(c) - 1)] for c in curves) / len(curves) for i in range(n)]
        ax.plot(range(1, n + 1), mean, color="tab:red", lw=2, label=f"mean of {len(curves)} prefixes")
        ax.legend(loc="lower right")
    ax.set_xlabel("evaluations (scored candidates)")
    ax.set_ylabel("best objective so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def check_with_rater(args: RunConfig, meta: dict[str, Any], results: list[SearchResult]) -> dict[str, Any]:
    """The true reward of what was found: per prefix, the mean rated reward of `check_samples` answers sampled
    from the model to the found prompt and to the bare prefix (the same seeds), or of the found completion and of
    one answer sampled to the prefix; their paired difference over prefixes."""
    rater = load_rater(args.rater, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    model, tok = load_model(args.model or meta["model"], args.dtype, args.device,
                            None if args.model else meta.get("revision"))

    def answered(prompts: list[str]) -> list[float]:
        k = args.check_samples
        got = sample_completions(model, tok, prompts, k, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size)
        scores = rater.rate([p for p in prompts for _ in range(k)], [c.text for cs in got for c in cs])
        return [sum(scores[i * k:(i + 1) * k]) / k for i in range(len(prompts))]

    bare = answered([r.prefix for r in results])
    if args.target == "prompt":
        found = answered([r.best.prompt for r in results])
    else:
        found = rater.rate([r.prefix for r in results], [r.best.prompt for r in results])
    summary = paired_summary(bare, found, n_boot=1000, seed=args.seed)
    line = (f"true reward ({args.rater}): found {summary['mean_post']:.3f} against the bare prefixes' "
            f"{summary['mean_pre']:.3f}, difference {summary['diff']:+.3f} [{summary['ci_lo']:+.3f}, "
            f"{summary['ci_hi']:+.3f}] over {len(results)} prefixes")
    return {"found": found, "bare": bare, "summary": summary, "line": line}


def main(args) -> int:
    with contextlib.ExitStack() as held:  # the run directory's lock, from its first write to the end
        return _main(args, held)


def _main(args, held: contextlib.ExitStack) -> int:
    args = config_from_args(args, RunConfig, "run")
    if not args.probe:
        raise RsearchError("the following arguments are required: --probe")
    # every input is checked before any model loads or worker starts
    budget = Budget(evaluations=args.budget, forwards=args.forwards, seconds=args.seconds)
    objective = Objective(logprob_weight=args.logprob_weight, length_penalty=args.length_penalty)
    options = strategy_options(args)
    make_strategy(args.strategy, options)
    prefixes = read_prefixes(args)
    if args.position is not None:
        parse_position(args.position)
    meta = check_probe(args, prefixes)
    trained_at = str(meta.get("position", "-1"))
    if args.target == "prompt" and args.position is None and trained_at != "user_end":
        raise RsearchError(
            f"the probe was trained at position {trained_at}, which a prompt search cannot read (no answer exists "
            f"yet): search with a probe trained at user_end (the sweep's probes/layerNN.resid_pre.user_end."
            f"safetensors), or pass --position user_end to read this one there anyway")
    config = run_settings(args, options, prefixes)
    run_dir = check_out_dir(run_directory(args, config))
    if args.ray_address is not None:  # a cluster that does not answer fails here, before anything is written
        ensure_ray(args.workers, args.ray_address, args.ray_timeout)
    held.enter_context(output_dir(run_dir))
    check_resume(run_dir, config, args.resume)
    write_json(run_dir / "run.json", config)

    threads = max(1, (os.cpu_count() or 1) // max(1, args.workers)) if args.workers else None
    spec = SearchSpec(probe=str(Path(args.probe).resolve()), strategy=args.strategy, options=options, budget=budget,
                      objective=objective, target=args.target, position=args.position, seed=args.seed,
                      top_k=args.top_k, model=args.model, device=args.device, dtype=args.dtype,
                      batch_size=args.batch_size, threads=threads)

    def progress(index: int, r: SearchResult) -> None:
        log.info(f"[{index + 1}/{len(prefixes)}] best {r.best_score:.4f} after {r.evaluations} evaluations "
                 f"({r.seconds:.1f}s): {r.best.prompt!r}")

    use_ray = args.workers > 0 or args.ray_address is not None
    if args.fan_out and use_ray:
        pool = RayPool(spec, max(1, args.workers), args.ray_address, connect_timeout=args.ray_timeout)
        try:
            searcher = spec.searcher(spec.scorer(), pool=pool)
            results = searcher.optimize_many(prefixes, run_dir=run_dir, resume=args.resume,
                                             on_result=lambda r: progress(prefixes.index(r.prefix), r))
        finally:
            pool.shutdown()
    else:
        results = run_many(spec, prefixes, workers=args.workers, address=args.ray_address, run_dir=run_dir,
                           resume=args.resume, on_result=progress)

    checked = check_with_rater(args, meta, results) if args.rater != "none" else None
    print(table(results, args.top_k))
    if checked:
        print(checked["line"])
    plot(results, run_dir / f"best_so_far_{file_safe(args.strategy)}.png",
         f"{args.strategy} · {args.target} target · budget {args.budget}")
    write_json(run_dir / "summary.json", {
        "strategy": args.strategy, "target": args.target, "n_prefixes": len(results),
        "mean_best_score": sum(r.best_score for r in results) / len(results),
        "results": [{"prefix": r.prefix, "best_score": r.best_score, "best_probe": r.best.probe_score,
                     "best_prompt": r.best.prompt, "evaluations": r.evaluations, "forwards": r.forwards,
                     "seconds": round(r.seconds, 3),
                     **({"true_reward": checked["found"][i], "true_reward_bare_prefix": checked["bare"][i]}
                        if checked else {})}
                    for i, r in enumerate(results)],
        **({"rater": args.rater, "true_reward": checked["summary"]} if checked else {})})
    log.info(f"run directory: {run_dir}")
    return 0
