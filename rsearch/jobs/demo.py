"""`rsearch demo`: the whole study, with a report that answers each research question from its numbers.

Stages (each writes its outputs atomically under `--out` and a `stage.json` with the hash of everything it
depends on; a rerun skips a stage whose hash matches, so a second run reuses what is cached):

1. subjects    the embedded organism (built once, cached under $RSEARCH_HOME), or the configured pre/post models
               and dataset (configs/zephyr.yaml's `demo:` section runs the real study this way);
2. probes      a sweep over every layer × position (user_end, completion_start, completion fractions,
               completion_end, -1, completion_mean), one extraction pass; the best probe by validation;
3. compare     k completions per prompt from each model, scored by the best probe, the DPO implicit reward,
               length and the true rater;
4. source      a probe that tells which model wrote a completion, across layers, split by prompt;
5. direction   per layer, the cosine of the RL update (post − pre activations on the same inputs) with the
               reward probe's direction at that layer, against random directions;
6. search      every strategy at the same budget on the same prefixes, with the user_end probe as objective;
               what each found is checked with the true rater (completions sampled from the post-RL model)
               against the unsearched prefix and random test prompts;
7. report      report.json (every number), report.md and a self-contained report.html.

The real study on a GPU: `rsearch demo --config configs/zephyr.yaml` (see the README's "The real study").
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rsearch.config import Config, check, load_yaml
from rsearch.errors import RsearchError
from rsearch.io_utils import save_figure, write_json

DEMO_POSITIONS = ("user_end", "completion_start", "completion_frac:0.25", "completion_frac:0.5",
                  "completion_frac:0.75", "completion_end", "-1", "completion_mean")
# at a budget of tens of evaluations GCG must take small steps to take more than one
DEMO_SEARCH_OPTIONS = {"gcg": {"n_tokens": 8, "search_width": 16, "topk": 32}}
STAGES = ("probes", "compare", "source", "direction", "search")


@dataclass(frozen=True)
class DemoConfig(Config):
    """Every setting of the demo; the defaults fit the README's time budget on 2 CPU cores.

    Args:
        pre, post, dataset: the subjects; empty means the embedded organism's (`organism_size`).
        layers: layers of the sweep, the source probe and the direction analysis (all when empty).
        positions: positions of the sweep.
        max_train, max_test: pairs used by the sweep (all when None).
        compare_n, compare_k: prompts and completions per prompt and model of the comparison.
        source_positions: where the source probe reads.
        strategies, search_budget, search_prefixes: every strategy searches every prefix with this many
            scored candidates; `search_options` maps a strategy name to its options.
        check_samples: completions sampled from the post-RL model per prompt to check a found prompt.
        random_prompts: test prompts forming the "random prompts" baseline of the search check.
        rater: auto (the organism's rater with the organism), organism, or none.
        threads: torch's intra-op threads for the stages after the organism (0: torch's default). One thread is
            the default: these models are small, and on 2 cores shared with other work torch's second thread
            made sampling ~38× slower here (0.9 s → 36 s for 240 completions); alone it gains at most ~2×.
    """

    pre: str = ""
    post: str = ""
    dataset: str = ""
    train_split: str = "train_prefs"
    test_split: str = "test_prefs"
    organism_size: str = "demo"
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    beta: float | None = None
    rater: str = "auto"
    # sweep
    layers: tuple[int, ...] = ()
    hook_kind: str = "resid_pre"
    positions: tuple[str, ...] = DEMO_POSITIONS
    max_train: int | None = 3000
    max_test: int | None = 600
    max_tokens: int = 2048
    fitter: str = "fast"
    extract_batch_size: int = 64
    store_dtype: str = "float32"
    # compare
    compare_n: int = 200
    compare_k: int = 4
    max_new_tokens: int = 48
    sample_batch_size: int = 256
    batch_size: int = 64
    n_boot: int = 2000
    # source probe
    source_positions: tuple[str, ...] = ("completion_mean", "-1")
    # direction
    n_random: int = 1000
    # search
    strategies: tuple[str, ...] = ("random", "beam", "gcg", "optuna")
    search_budget: int = 128
    search_prefixes: tuple[str, ...] = ("hey ,", "please ,", "what is")
    search_options: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEMO_SEARCH_OPTIONS.items()})
    check_samples: int = 16
    random_prompts: int = 48
    threads: int = 1
    out: str = "runs/demo"
    progress: bool = True

    def __post_init__(self) -> None:
        from rsearch.positions import parse_position

        check(self.threads >= 0, f"threads: must be ≥ 0 (0: torch's default), got {self.threads}")
        check(self.compare_n >= 4, "compare_n: need at least 4 prompts (the source probe splits them 3 ways)")
        check(self.compare_k >= 1, "compare_k: must be at least 1")
        check(self.search_budget >= 1, "search_budget: must be at least 1")
        check(bool(self.search_prefixes), "search_prefixes: give at least one prefix")
        check(self.check_samples >= 1 and self.random_prompts >= 1, "check_samples/random_prompts: must be ≥ 1")
        check(self.rater in ("auto", "organism", "none"), f"rater: use auto, organism or none, got {self.rater!r}")
        check(self.hook_kind in ("resid_pre", "resid_post"), f"hook_kind: unknown {self.hook_kind!r}")
        check(any(parse_position(p).spec == "user_end" for p in self.positions),
              "positions: the sweep needs user_end (the search's objective and Q1's prompt-only probe)")
        check(any(parse_position(p).needs_completion or parse_position(p).spec.lstrip("-").isdigit()
                  for p in self.positions), "positions: the sweep needs a completion position for the comparison")
        for p in self.positions + self.source_positions:
            parse_position(p)
        check(isinstance(self.search_options, dict) and all(isinstance(v, dict) for v in self.search_options.values()),
              "search_options: a mapping of strategy name → options")


# ----- stage bookkeeping -----

STAGE_FORMAT = 2  # bump when what a stage writes changes, so outputs cached by an older rsearch are recomputed


def stage_key(name: str, settings: dict[str, Any], upstream: dict[str, str]) -> str:
    blob = json.dumps({"stage": name, "format": STAGE_FORMAT, "settings": settings, "upstream": upstream},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Stages:
    """Runs stages in order, skipping one whose `stage.json` holds the same key; prints progress."""

    def __init__(self, out: Path, progress: bool):
        self.out, self.progress = out, progress
        self.keys: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.reused: list[str] = []

    def say(self, text: str) -> None:
        if self.progress:
            print(f"[demo {time.perf_counter() - self.t0:6.1f}s] {text}", flush=True)

    def run(self, name: str, settings: dict[str, Any], upstream: tuple[str, ...], fn: Callable[[Path], Any]) -> Any:
        key = stage_key(name, settings, {u: self.keys[u] for u in upstream})
        directory = self.out / name
        marker = directory / "stage.json"
        if marker.exists():
            try:
                old = json.loads(marker.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("key") == key and (directory / old.get("result", "")).is_file():
                self.keys[name] = key
                self.reused.append(name)
                self.say(f"{name}: reusing {directory} (same settings)")
                return json.loads((directory / old["result"]).read_text())
        self.say(f"{name}: running")
        t = time.perf_counter()
        result_file = fn(directory)
        seconds = time.perf_counter() - t
        write_json(marker, {"key": key, "result": result_file, "seconds": round(seconds, 2)})
        self.keys[name] = key
        self.say(f"{name}: done in {seconds:.1f}s")
        return json.loads((directory / result_file).read_text())


# ----- the pipeline -----

def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Runs every stage (reusing cached ones) and writes the report; returns report.json's content."""
    import torch

    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    st = Stages(out, cfg.progress)
    st.say(f"rsearch demo → {out}")
    subjects = resolve_demo_subjects(cfg, st)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_stages(cfg, st, subjects, out)
    finally:
        torch.set_num_threads(threads)


def _run_stages(cfg: DemoConfig, st: Stages, subjects: dict[str, Any], out: Path) -> dict[str, Any]:
    from rsearch.jobs.compare import ModelCache

    models = ModelCache(cfg.dtype, cfg.device)
    st.keys["subjects"] = subjects["key"]

    sweep = st.run("probes", _sweep_settings(cfg), ("subjects",),
                   lambda d: stage_probes(cfg, subjects, d))
    compare = st.run("compare", _compare_settings(cfg), ("subjects", "probes"),
                     lambda d: stage_compare(cfg, subjects, sweep, models, d))
    source = st.run("source", {"positions": list(cfg.source_positions), "layers": list(cfg.layers), "seed": cfg.seed},
                    ("compare",), lambda d: stage_source(cfg, subjects, sweep, models, d))
    direction = st.run("direction", {"n_random": cfg.n_random, "layers": list(cfg.layers), "seed": cfg.seed},
                       ("compare",), lambda d: stage_direction(cfg, subjects, sweep, models, d))
    search = st.run("search", _search_settings(cfg), ("subjects", "probes"),
                    lambda d: stage_search(cfg, subjects, sweep, models, d))

    from rsearch.report import build_report, write_report

    st.say("report: writing report.json, report.md, report.html")
    report = build_report(cfg=cfg.to_dict(), subjects=subjects, sweep=sweep, compare=compare, source=source,
                          direction=direction, search=search, out=out, seconds=time.perf_counter() - st.t0,
                          reused=st.reused)
    write_report(out, report)
    st.say(f"done: {out / 'report.html'}")
    return report


def resolve_demo_subjects(cfg: DemoConfig, st: Stages) -> dict[str, Any]:
    """pre, post, dataset, rater, β (and the organism's card) — the organism's unless configured."""
    org = None
    if not (cfg.pre and cfg.post and cfg.dataset):
        from rsearch.organism import ensure

        st.say(f"subjects: the embedded organism ({cfg.organism_size}); built once, then cached")
        org = ensure(cfg.organism_size, seed=cfg.seed, progress=cfg.progress)
    pre = cfg.pre or str(org.pre_dir)
    post = cfg.post or str(org.post_dir)
    dataset = cfg.dataset or str(org.data_dir)
    is_org = org is not None and not cfg.pre and not cfg.post
    rater = {"auto": "organism" if is_org else None, "organism": "organism", "none": None}[cfg.rater]
    beta = cfg.beta
    if beta is None and is_org:
        from rsearch.jobs.compare import _organism_beta

        beta = _organism_beta(org)
    card = getattr(org, "card", None) if is_org else None
    key_parts = {"pre": pre, "post": post, "dataset": dataset, "rater": rater, "beta": beta}
    for name in ("pre", "post"):
        p = Path(key_parts[name]).expanduser()
        cfg_file = p / "config.json"
        weights = sorted(p.glob("*.safetensors")) if p.is_dir() else []
        key_parts[f"{name}_stamp"] = [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights] + (
            [cfg_file.stat().st_mtime_ns] if cfg_file.is_file() else [])
    st.say(f"subjects: pre {pre}, post {post}, data {dataset}, rater {rater or 'none'}")
    return {"pre": pre, "post": post, "dataset": dataset, "rater": rater, "beta": beta,
            "organism": is_org, "organism_size": cfg.organism_size if is_org else None,
            "card": _jsonable(card), "key": stage_key("subjects", key_parts, {})}


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


# ----- stages -----

def _sweep_settings(cfg: DemoConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("layers", "hook_kind", "positions", "max_train", "max_test", "max_tokens",
                                         "fitter", "seed", "train_split", "test_split", "dtype")}


def stage_probes(cfg: DemoConfig, subjects: dict, directory: Path) -> str:
    from rsearch.jobs.train_probe import TrainProbeConfig, train_probes

    tp = TrainProbeConfig(model=subjects["post"], dataset=subjects["dataset"], train_split=cfg.train_split,
                          test_split=cfg.test_split, sweep=True, layers=cfg.layers, hook_kind=cfg.hook_kind,
                          positions=cfg.positions, max_train=cfg.max_train, max_test=cfg.max_test,
                          max_tokens=cfg.max_tokens, fitter=cfg.fitter, extract_batch_size=cfg.extract_batch_size,
                          store_dtype=cfg.store_dtype, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed,
                          out=str(directory), progress=cfg.progress)
    train_probes(tp)
    return "metrics.json"


def _compare_settings(cfg: DemoConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("compare_n", "compare_k", "max_new_tokens", "seed", "n_boot", "beta",
                                         "rater", "test_split")}


def stage_compare(cfg: DemoConfig, subjects: dict, sweep: dict, models, directory: Path) -> str:
    from rsearch.jobs.compare import CompareConfig, run_compare

    rater = "organism" if subjects["rater"] == "organism" else "none"
    cc = CompareConfig(pre=subjects["pre"], post=subjects["post"], probe=sweep["best_probe"],
                       prompts=cfg.test_split, dataset=subjects["dataset"], n=cfg.compare_n, k=cfg.compare_k,
                       seed=cfg.seed, max_new_tokens=cfg.max_new_tokens, sample_batch_size=cfg.sample_batch_size,
                       batch_size=cfg.batch_size, beta=subjects["beta"], rater=rater, dtype=cfg.dtype,
                       device=cfg.device, n_boot=cfg.n_boot, out=str(directory), progress=cfg.progress)
    run_compare(cc, models)
    return "compare.json"


def _layers(cfg: DemoConfig, sweep: dict) -> list[int]:
    have = sorted({int(r["layer"]) for r in sweep["rows"]})
    return [L for L in have if not cfg.layers or L in cfg.layers]


def _compare_rows(subjects: dict, models, directory: Path):
    """The comparison's scored completions, encoded with the post-RL model's tokenizer."""
    from rsearch.chat import encode_conversation
    from rsearch.jobs.compare import load_table

    _, tok = models.get(subjects["post"])
    table = [r for r in load_table(directory.parent / "compare") if r["probe_score"] is not None]
    rows = [encode_conversation(tok, r.get("messages") or r["prompt"], r["completion"]) for r in table]
    return table, rows, tok


def stage_source(cfg: DemoConfig, subjects: dict, sweep: dict, models, directory: Path) -> str:
    from rsearch.analysis.source_probe import source_probe

    table, rows, tok = _compare_rows(subjects, models, directory)
    model, _ = models.get(subjects["post"])
    got = source_probe(model, tok, rows, [int(r["model"] == "post") for r in table],
                       [r["prompt_index"] for r in table], [r["length"] for r in table], layers=_layers(cfg, sweep),
                       positions=cfg.source_positions, hook_kind=cfg.hook_kind, seed=cfg.seed,
                       batch_size=cfg.batch_size, progress=cfg.progress)
    got["reader"] = subjects["post"]
    write_json(directory / "source.json", got)
    _plot_source(directory / "source.png", got)
    return "source.json"


def stage_direction(cfg: DemoConfig, subjects: dict, sweep: dict, models, directory: Path) -> str:
    from rsearch.probes import load_probe
    from rsearch.analysis.direction import capture_both, direction_vs_update

    table, rows, tok = _compare_rows(subjects, models, directory)
    position = sweep["best"]["position"]
    layers = _layers(cfg, sweep)
    probe_paths = {int(r["layer"]): r["path"] for r in sweep["rows"] if r["position"] == position
                   and int(r["layer"]) in layers}
    pre, _ = models.get(subjects["pre"])
    post, _ = models.get(subjects["post"])
    pre_acts, post_acts = capture_both(pre, post, rows, sorted(probe_paths), position, pad_id=tok.pad_token_id,
                                       hook_kind=cfg.hook_kind, batch_size=cfg.batch_size, progress=cfg.progress)
    probes = {L: load_probe(p)[0] for L, p in probe_paths.items()}
    got = direction_vs_update(pre_acts, post_acts, probes, position=position, hook_kind=cfg.hook_kind,
                              n_random=cfg.n_random, seed=cfg.seed)
    got["inputs"] = f"the comparison's {len(rows)} scored completions (both models'), read by both models"
    write_json(directory / "direction.json", got)
    _plot_direction(directory / "direction.png", got)
    return "direction.json"


def _search_settings(cfg: DemoConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("strategies", "search_budget", "search_prefixes", "search_options",
                                         "check_samples", "random_prompts", "max_new_tokens", "seed", "n_boot",
                                         "test_split", "rater")}


def user_end_probe(sweep: dict) -> dict:
    """The sweep's best prompt-only probe (user_end), chosen by validation Pearson r."""
    rows = [r for r in sweep["rows"] if r["position"] == "user_end"]
    if not rows:
        raise RsearchError("the sweep has no user_end probe to search with")
    return max(rows, key=lambda r: (r.get("val_pearson") if r.get("val_pearson") is not None else float("-inf")))


def stage_search(cfg: DemoConfig, subjects: dict, sweep: dict, models, directory: Path) -> str:
    """Every strategy on every prefix at the same budget; found prompts checked with the true rater."""
    from rsearch.analysis.sampling import sample_completions
    from rsearch.analysis.stats import two_sample_summary
    from rsearch.jobs.compare import load_prompts, user_text
    from rsearch.scorer import ProbeScorer
    from rsearch.searcher import Searcher

    probe_row = user_end_probe(sweep)
    model, tok = models.get(subjects["post"])
    scorer = ProbeScorer.from_file(probe_row["path"], model=model, tokenizer=tok, batch_size=cfg.batch_size)
    rate = _rater(subjects)
    randoms = [user_text(m) for _, m in load_prompts(cfg.test_split, subjects["dataset"], cfg.random_prompts,
                                                     cfg.seed + 1)]

    def check_prompts(prompts: list[str], seed: int) -> list[dict]:
        """Per prompt: probe score at user_end, and (with a rater) the true reward of post-RL completions."""
        scores = scorer.score_texts(prompts).tolist()
        if not rate:  # without a rater there is nothing to check the answers against: skip sampling them
            return [{"prompt": p, "probe_score": s, "true_rewards": [], "mean_true_reward": None,
                     "example_completion": None} for p, s in zip(prompts, scores)]
        done = []
        samples = sample_completions(model, tok, prompts, cfg.check_samples, seed=seed,
                                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size)
        for p, s, comps in zip(prompts, scores, samples):
            rewards = [rate(p, c.text) for c in comps]
            done.append({"prompt": p, "probe_score": s, "true_rewards": rewards,
                         "mean_true_reward": sum(rewards) / len(rewards),
                         "example_completion": comps[0].text})
        return done

    baseline_prefix = check_prompts(list(cfg.search_prefixes), cfg.seed + 2)
    baseline_random = check_prompts(randoms, cfg.seed + 3)
    pooled = lambda checks: [x for c in checks for x in c["true_rewards"]]
    strategies = []
    for name in cfg.strategies:
        searcher = Searcher(scorer, strategy=name, budget=cfg.search_budget, options=cfg.search_options.get(name),
                            target="prompt", seed=cfg.seed)
        results = []
        t = time.perf_counter()
        for prefix in cfg.search_prefixes:
            if cfg.progress:
                print(f"[search] {name}: {prefix!r} (budget {cfg.search_budget})", flush=True)
            results.append(searcher.optimize(prefix))
        seconds = time.perf_counter() - t
        found = check_prompts([r.best.prompt for r in results], cfg.seed + 4)
        entry = {"strategy": name, "seconds": round(seconds, 2), "evaluations": [r.evaluations for r in results],
                 "results": [{"prefix": r.prefix, "found": r.best.prompt, "span": r.best.text,
                              "probe_score": r.best.probe_score, "objective": r.best.score,
                              "best_so_far": list(r.best_so_far), **{k: v for k, v in c.items() if k != "prompt"}}
                             for r, c in zip(results, found)],
                 "mean_probe_score": sum(r.best.probe_score for r in results) / len(results),
                 "probe_vs_prefix": two_sample_summary([r.best.probe_score for r in results],
                                                       [b["probe_score"] for b in baseline_prefix],
                                                       n_boot=cfg.n_boot, seed=cfg.seed)}
        if rate:
            entry["true_vs_prefix"] = two_sample_summary(pooled(found), pooled(baseline_prefix), n_boot=cfg.n_boot,
                                                         seed=cfg.seed)
            entry["true_vs_random"] = two_sample_summary(pooled(found), pooled(baseline_random), n_boot=cfg.n_boot,
                                                         seed=cfg.seed)
        strategies.append(entry)
    got = {"probe": probe_row["path"], "probe_layer": int(probe_row["layer"]), "probe_position": "user_end",
           "probe_test_pearson": probe_row.get("test_pearson"), "budget": cfg.search_budget,
           "prefixes": list(cfg.search_prefixes), "check_samples": cfg.check_samples, "rater": subjects["rater"],
           "target": "prompt (the rest of the user's message after the prefix), scored at user_end",
           "baseline_prefix": baseline_prefix, "baseline_random": baseline_random,
           "baseline_prefix_mean_true_reward": _mean(pooled(baseline_prefix)),
           "baseline_random_mean_true_reward": _mean(pooled(baseline_random)),
           "baseline_prefix_mean_probe_score": _mean([b["probe_score"] for b in baseline_prefix]),
           "baseline_random_mean_probe_score": _mean([b["probe_score"] for b in baseline_random]),
           "strategies": strategies}
    write_json(directory / "search.json", got)
    _plot_search(directory / "search.png", got)
    return "search.json"


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _rater(subjects: dict):
    if subjects["rater"] != "organism":
        return None
    from rsearch.organism.rater import true_score

    return true_score


# ----- figures -----

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_source(path: Path, got: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for pos in dict.fromkeys(r["position"] for r in got["rows"]):
        rows = sorted((r for r in got["rows"] if r["position"] == pos), key=lambda r: r["layer"])
        L = [r["layer"] for r in rows]
        acc = [r["test"]["accuracy"] for r in rows]
        lo = [r["test"]["accuracy_lo"] for r in rows]
        hi = [r["test"]["accuracy_hi"] for r in rows]
        ax.plot(L, acc, marker="o", label=pos)
        ax.fill_between(L, lo, hi, alpha=0.15)
    ax.axhline(got["length_control"]["accuracy"], color="grey", ls="--", label="length only")
    ax.axhline(0.5, color="black", lw=0.6)
    ax.set_xticks(sorted({r["layer"] for r in got["rows"]}))
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("source probe: which model wrote the completion?", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_direction(path: Path, got: dict) -> None:
    plt = _pyplot()
    rows = got["rows"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    L = [r["layer"] for r in rows]
    ax.plot(L, [r["cos"] for r in rows], marker="o", label="cos(update, probe direction)")
    p95 = [r["random_abs_cos_p95"] for r in rows]
    ax.fill_between(L, [-x for x in p95], p95, color="grey", alpha=0.25, label="random directions, 95% of |cos|")
    fam = [r["random_abs_cos_family95"] for r in rows]
    ax.plot(L, fam, color="grey", ls="--", lw=0.8, label=f"same, corrected for {len(L)} layers")
    ax.plot(L, [-x for x in fam], color="grey", ls="--", lw=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(L)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine")
    ax.set_title(f"RL update vs reward-probe direction at {got['position']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_search(path: Path, got: dict) -> None:
    import numpy as np

    plt = _pyplot()
    has_true = any("true_vs_prefix" in s for s in got["strategies"])
    fig, axes = plt.subplots(1, 2 if has_true else 1, figsize=(10 if has_true else 5.2, 3.4), squeeze=False)
    ax = axes[0][0]
    for s in got["strategies"]:
        curves = [r["best_so_far"] for r in s["results"]]
        n = min(len(c) for c in curves)
        ax.plot(range(1, n + 1), np.mean([c[:n] for c in curves], axis=0), label=s["strategy"])
    ax.axhline(got["baseline_prefix_mean_probe_score"], color="grey", ls="--", label="unsearched prefix")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best probe score so far")
    ax.set_title("mean over prefixes", fontsize=9)
    ax.legend(fontsize=7)
    if has_true:
        ax = axes[0][1]
        names = ["prefix", "random prompts"] + [s["strategy"] for s in got["strategies"]]
        means = [got["baseline_prefix_mean_true_reward"], got["baseline_random_mean_true_reward"]] + [
            s["true_vs_prefix"]["mean_a"] for s in got["strategies"]]
        ax.bar(range(len(names)), means, color=["grey", "grey"] + ["C%d" % i for i in range(len(got["strategies"]))])
        ax.set_xticks(range(len(names)), names, rotation=25, fontsize=8)
        ax.set_ylabel("true reward of post-RL answers")
    fig.tight_layout()
    save_figure(fig, path)


# ----- command line -----

def add_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML file (top-level keys, or a `demo:` section), e.g. configs/demo.yaml")
    parser.add_argument("--out", help="output directory (default runs/demo)")
    parser.add_argument("--organism-size", choices=("tiny", "demo"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.epilog = ("The real study: `rsearch demo --config configs/zephyr.yaml` on a GPU with hub access runs "
                     "the same stages on HuggingFaceH4/mistral-7b-sft-beta → zephyr-7b-beta and "
                     "ultrafeedback_binarized (see the README's 'The real study').")


def config_from_args(args) -> DemoConfig:
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        raw = load_yaml(args.config)
        data = dict(raw["demo"] if "demo" in raw else raw)
        if isinstance(raw.get("search"), dict) and "search_options" not in data:
            data["search_options"] = raw["search"]  # strategy → options
    for key in ("out", "organism_size", "seed", "device"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if getattr(args, "quiet", False):
        data["progress"] = False
    return DemoConfig.from_dict(data, where="demo")


def main(args) -> int:
    cfg = config_from_args(args)
    report = run_demo(cfg)
    print()
    for q in report["answers"]:
        print(f"{q['id']}. {q['question']}\n   {q['answer']}\n")
    print(f"report: {Path(cfg.out) / 'report.md'}  ·  {Path(cfg.out) / 'report.html'}", file=sys.stdout)
    return 0
