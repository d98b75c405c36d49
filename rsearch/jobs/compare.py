"""`rsearch compare`: do the post-RL model's completions score higher under the probe than the pre-RL model's?

For the same N prompts, k completions are sampled from each model (same seeded sampling settings, the model's
own distribution). Every completion is then scored four ways:

- the reward probe, through the probe's own host model (`ProbeScorer`);
- the DPO implicit reward β·(log π_post(y|x) − log π_pre(y|x)), teacher-forced, summed over the completion's
  tokens (and the end-of-turn token that closes it);
- its length in tokens;
- its true reward, where a rater is known (the embedded organism's).

Per prompt the k values of each model are averaged; the paired differences post − pre across prompts give the
mean difference, a seeded bootstrap 95% CI over prompts and a Wilcoxon signed-rank p-value
(`rsearch.analysis.stats`). The per-completion table (`completions.jsonl` / `.csv`) is written next to the
summary (`compare.json`), which is computed from it alone; figures: the score distributions and probe score
against true reward (or against the DPO reward when no rater is known).
"""
from __future__ import annotations

import csv
import io
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


from rsearch.config import Config, check, load_yaml
from rsearch.errors import RsearchError
from rsearch.io_utils import read_jsonl, save_figure, write_json, write_text

METRICS = ("probe_score", "dpo_reward", "length", "true_reward")
METRIC_LABELS = {"probe_score": "probe score", "dpo_reward": "DPO implicit reward", "length": "length (tokens)",
                 "true_reward": "true reward"}
TABLE_COLUMNS = ("prompt_index", "prompt_id", "model", "sample", "prompt", "completion", "length", "ended",
                 "probe_score", "logp_pre", "logp_post", "dpo_reward", "true_reward")


@dataclass(frozen=True)
class CompareConfig(Config):
    """Args:
        pre, post: hub ids or local model directories; empty means the embedded organism's.
        probe: a probe file; it is read through the model its metadata names (reused if it is pre or post).
        prompts: a split name of `dataset` (e.g. test_prefs) or a file (.txt one prompt a line, or
            .jsonl/.parquet with the ultrafeedback schema or a `prompt` column).
        dataset: where split names are looked up; empty means the organism's data.
        n: prompts (a seeded sample of the distinct prompts); k: completions per prompt and model.
        beta: DPO β of the implicit reward; None takes the organism's (its card) or 0.1 (zephyr's).
        rater: auto (the organism's rater when comparing the organism's models), organism, or none.
    """

    pre: str = ""
    post: str = ""
    probe: str = ""
    prompts: str = "test_prefs"
    dataset: str = ""
    n: int = 200
    k: int = 4
    seed: int = 0
    max_new_tokens: int = 64
    temperature: float = 1.0
    max_prompt_tokens: int = 1024
    sample_batch_size: int = 64
    batch_size: int = 16
    beta: float | None = None
    rater: str = "auto"
    dtype: str = "float32"
    device: str = "auto"
    revision_pre: str | None = None
    revision_post: str | None = None
    n_boot: int = 2000
    organism_size: str = "demo"
    out: str = "runs/compare"
    progress: bool = True

    def __post_init__(self) -> None:
        check(self.n >= 2, f"n: need at least 2 prompts for paired statistics, got {self.n}")
        check(self.k >= 1, f"k: need at least 1 completion per prompt, got {self.k}")
        check(self.max_new_tokens >= 1, "max_new_tokens: must be at least 1")
        check(self.temperature > 0, "temperature: must be positive")
        check(self.beta is None or self.beta > 0, f"beta: must be positive, got {self.beta}")
        check(self.rater in ("auto", "organism", "none"), f"rater: use auto, organism or none, got {self.rater!r}")
        check(self.n_boot >= 100, "n_boot: use at least 100 bootstrap resamples")
        check(self.sample_batch_size >= 1 and self.batch_size >= 1, "batch sizes must be at least 1")


@dataclass(frozen=True)
class CompareResult:
    summary: dict[str, Any]
    table: list[dict[str, Any]]
    out_dir: Path


# ----- models, shared between stages -----

class ModelCache:
    """Loaded (model, tokenizer) by (name, revision), so the demo's stages load each model once."""

    def __init__(self, dtype: str = "float32", device: str = "auto"):
        self.dtype, self.device = dtype, device
        self._models: dict[tuple[str, str | None], tuple[Any, Any]] = {}

    def get(self, name: str, revision: str | None = None):
        key = (_norm(name), revision)
        if key not in self._models:
            from rsearch.models import load_model

            self._models[key] = load_model(name, self.dtype, self.device, revision)
        return self._models[key]

    def find(self, name: str | None):
        """The loaded model named `name` (any revision), or None."""
        for (n, _), pair in self._models.items():
            if name and n == _norm(name):
                return pair
        return None


def _norm(name: str) -> str:
    p = Path(str(name)).expanduser()
    return str(p.resolve()) if p.exists() else str(name)


# ----- subjects -----

def resolve_subjects(cfg: CompareConfig) -> dict[str, Any]:
    """pre, post, dataset, β and rater: as configured, the organism's where left empty."""
    org = None
    if not (cfg.pre and cfg.post) or (not cfg.dataset and not Path(cfg.prompts).expanduser().is_file()):
        from rsearch.organism import ensure

        org = ensure(cfg.organism_size, seed=cfg.seed, progress=cfg.progress)
    pre = cfg.pre or str(org.pre_dir)
    post = cfg.post or str(org.post_dir)
    dataset = cfg.dataset or (str(org.data_dir) if org is not None else "")
    # the organism's models (given by path or defaulted) carry its card in their parent directory
    root = organism_root(pre)
    if root is not None and root == organism_root(post):
        from rsearch.organism import Organism

        org = Organism.at(root)
    else:
        org = None
    rater = {"auto": "organism" if org is not None else None, "organism": "organism", "none": None}[cfg.rater]
    beta, beta_source = cfg.beta, "config"
    if beta is None:
        found = _organism_beta(org) if org is not None else None
        beta, beta_source = (found, "organism card") if found else (0.1, "default (zephyr's DPO beta)")
    return {"pre": pre, "post": post, "dataset": dataset, "rater": rater, "beta": float(beta),
            "beta_source": beta_source}


def organism_root(path: str) -> Path | None:
    """The organism build a model directory belongs to (its parent holds card.json), or None."""
    p = Path(path).expanduser()
    if p.is_dir() and (p.parent / "card.json").is_file() and (p / "config.json").is_file():
        return p.parent.resolve()
    return None


def _organism_beta(org) -> float | None:
    """DPO β from the organism's card (`config.dpo_beta`)."""
    value = ((getattr(org, "card", None) or {}).get("config") or {}).get("dpo_beta")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ----- prompts -----

def load_prompts(spec: str, dataset: str, n: int, seed: int) -> list[tuple[str, list[dict]]]:
    """A seeded sample of n distinct prompts: (prompt_id, messages before the assistant's turn)."""
    import hashlib

    from rsearch.data import load_records, pairs_from_records

    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".txt":
        lines = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        items = [(hashlib.sha256(t.encode()).hexdigest()[:16], [{"role": "user", "content": t}]) for t in lines]
        source = str(p)
    else:
        if p.is_file():
            records, source = load_records(str(p), None), str(p)
        else:
            if not dataset:
                raise RsearchError(f"prompts {spec!r} is not a file, and no dataset is given to take split {spec!r} "
                                   "from (pass --dataset)")
            records, source = load_records(dataset, spec), f"{dataset}:{spec}"
        if not records:
            raise RsearchError(f"{source}: no rows")
        if all(c in records[0] for c in ("chosen", "rejected", "score_chosen", "score_rejected")):
            items = [(fp.prompt_id, list(fp.prompt)) for fp in pairs_from_records(records, source)]
        elif "prompt" in records[0]:
            items = [(str(r.get("prompt_id") or hashlib.sha256(str(r["prompt"]).encode()).hexdigest()[:16]),
                      [{"role": "user", "content": str(r["prompt"])}]) for r in records]
        else:
            raise RsearchError(f"{source}: needs a 'prompt' column (or the ultrafeedback schema)")
    unique = {}
    for pid, messages in items:
        unique.setdefault(pid, messages)
    ids = sorted(unique)
    random.Random(seed).shuffle(ids)
    if len(ids) < 2:
        raise RsearchError(f"{source}: only {len(ids)} distinct prompt(s); paired statistics need at least 2")
    return [(pid, unique[pid]) for pid in ids[:n]]


def user_text(messages: Sequence[dict]) -> str:
    """The last user message: what the organism's rater reads as the prompt."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else str(messages[-1]["content"])


# ----- the job -----

def run_compare(cfg: CompareConfig, models: ModelCache | None = None) -> CompareResult:
    """Runs the comparison (see the module docstring) and writes its outputs under `cfg.out`."""
    from rsearch.analysis.sampling import completion_logprobs, sample_completions
    from rsearch.chat import encode_conversation

    if not cfg.probe:
        raise RsearchError("no probe given: pass --probe FILE (e.g. runs/probes/best_probe.safetensors)")
    if not Path(cfg.probe).expanduser().is_file():
        raise RsearchError(f"probe file not found: {cfg.probe}")
    t0 = time.perf_counter()
    subjects = resolve_subjects(cfg)
    models = models or ModelCache(cfg.dtype, cfg.device)
    prompts = load_prompts(cfg.prompts, subjects["dataset"], cfg.n, cfg.seed)
    pre_model, pre_tok = models.get(subjects["pre"], cfg.revision_pre)
    post_model, post_tok = models.get(subjects["post"], cfg.revision_post)
    prompts = [(pid, m) for pid, m in prompts
               if len(encode_conversation(post_tok, m, None)) + cfg.max_new_tokens <= cfg.max_prompt_tokens]
    if len(prompts) < 2:
        raise RsearchError(f"fewer than 2 prompts fit max_prompt_tokens={cfg.max_prompt_tokens}")
    probe_sample = encode_conversation(post_tok, prompts[0][1], "ok").ids
    if encode_conversation(pre_tok, prompts[0][1], "ok").ids != probe_sample:
        raise RsearchError("the pre- and post-RL tokenizers encode the same conversation differently: "
                           "compare needs models of one tokenizer")

    # one sampling pass per model, the same seeds and batches for both
    _say(cfg, f"sampling {cfg.k} completions × {len(prompts)} prompts from each model")
    messages = [m for _, m in prompts]
    sampled = {name: sample_completions(model, post_tok, messages, cfg.k, seed=cfg.seed,
                                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                        batch_size=cfg.sample_batch_size, progress=cfg.progress,
                                        desc=f"sample {name}")
               for name, model in (("pre", pre_model), ("post", post_model))}
    table, rows, where, row_messages = [], [], [], []
    for name in ("pre", "post"):
        for i, (pid, m) in enumerate(prompts):
            for s, c in enumerate(sampled[name][i]):
                rec = {"prompt_index": i, "prompt_id": pid, "model": name, "sample": s, "prompt": user_text(m),
                       "messages": m,
                       "completion": c.text, "length": c.n_tokens, "ended": c.ended, "probe_score": None,
                       "logp_pre": None, "logp_post": None, "dpo_reward": None, "true_reward": None}
                if c.text:  # an empty completion has no tokens to read; it keeps its row, without scores
                    rows.append(encode_conversation(post_tok, m, c.text))
                    where.append(len(table))
                    row_messages.append(m)
                table.append(rec)

    _say(cfg, f"scoring {len(rows)} completions: log-probs under both models, the probe, the rater")
    lp = {name: completion_logprobs(model, rows, pad_id=post_tok.pad_token_id, eos_id=post_tok.eos_token_id,
                                    batch_size=cfg.batch_size, progress=cfg.progress, desc=f"log-probs {name}")
          for name, model in (("pre", pre_model), ("post", post_model))}
    scorer = _scorer(cfg, models, subjects)
    score_rows = rows if scorer.tokenizer is post_tok else [
        encode_conversation(scorer.tokenizer, m, table[j]["completion"]) for m, j in zip(row_messages, where)]
    probe_scores = scorer.score_rows(score_rows).probe
    if subjects["rater"] == "organism":
        from rsearch.organism.rater import true_score
    for n_row, j in enumerate(where):
        rec = table[j]
        rec["probe_score"] = float(probe_scores[n_row])
        rec["logp_pre"], rec["logp_post"] = float(lp["pre"][n_row]), float(lp["post"][n_row])
        rec["dpo_reward"] = subjects["beta"] * (rec["logp_post"] - rec["logp_pre"])
    if subjects["rater"] == "organism":
        for rec in table:
            rec["true_reward"] = float(true_score(rec["prompt"], rec["completion"]))

    out = Path(cfg.out)
    write_table(out, table)
    summary = summarize(table, n_boot=cfg.n_boot, seed=cfg.seed)
    summary.update({
        "config": cfg.to_dict(), "pre": subjects["pre"], "post": subjects["post"], "dataset": subjects["dataset"],
        "prompts": cfg.prompts, "beta": subjects["beta"], "beta_source": subjects["beta_source"],
        "rater": subjects["rater"], "k": cfg.k, "probe": str(cfg.probe),
        "probe_meta": {key: scorer.metadata.get(key) for key in ("model", "hook", "position", "objective")},
        "table": "completions.jsonl", "seconds": round(time.perf_counter() - t0, 2),
    })
    summary["figures"] = write_figures(out, table, summary)
    write_json(out / "compare.json", summary)
    return CompareResult(summary, table, out)


def _scorer(cfg: CompareConfig, models: ModelCache, subjects: dict[str, Any]):
    """The probe's scorer, reading through the probe's own host model (pre or post when it is one of them)."""
    from rsearch.probes import load_probe
    from rsearch.scorer import ProbeScorer

    probe, meta = load_probe(cfg.probe)
    host = meta.get("model")
    loaded = None
    if host and _norm(host) in (_norm(subjects["pre"]), _norm(subjects["post"])):
        loaded = models.find(host)
    elif host:
        loaded = models.get(host, meta.get("revision"))
    if loaded is None:
        raise RsearchError(f"{cfg.probe}: its metadata names no model to read it through")
    return ProbeScorer(probe, loaded[0], loaded[1], metadata=meta, batch_size=cfg.batch_size)


def _say(cfg: CompareConfig, text: str) -> None:
    if cfg.progress:
        print(f"[compare] {text}", flush=True)


# ----- statistics from the table -----

def summarize(table: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every statistic of the summary, computed from the per-completion table alone."""
    from rsearch.analysis.stats import METRICS_TEST, correlation, paired_summary, per_prompt_means

    metrics = {}
    for metric in METRICS:
        keys, pre, post = per_prompt_means(table, metric)
        if len(keys) >= 2:
            metrics[metric] = paired_summary(pre, post, n_boot=n_boot, seed=seed)
    scored = [r for r in table if r["probe_score"] is not None]
    correlations = {}
    for other in ("true_reward", "dpo_reward", "length"):
        pairs = [(r["probe_score"], r[other], r["prompt_index"]) for r in scored if r.get(other) is not None]
        if len(pairs) >= 3:
            a, b, g = zip(*pairs)
            correlations[f"probe_vs_{other}"] = correlation(a, b, groups=g, n_boot=n_boot, seed=seed)
    if any(r.get("true_reward") is not None for r in scored):
        pairs = [(r["dpo_reward"], r["true_reward"], r["prompt_index"]) for r in scored]
        a, b, g = zip(*pairs)
        correlations["dpo_reward_vs_true_reward"] = correlation(a, b, groups=g, n_boot=n_boot, seed=seed)
    count = {m: sum(1 for r in table if r["model"] == m) for m in ("pre", "post")}
    empty = {m: sum(1 for r in table if r["model"] == m and r["probe_score"] is None) for m in ("pre", "post")}
    return {
        "n_prompts": len({r["prompt_index"] for r in table}), "n_completions": count, "n_empty": empty,
        "test": METRICS_TEST,
        "ci": f"percentile bootstrap 95% over prompts ({n_boot} resamples, seed {seed}) of the mean per-prompt "
              "difference post − pre (each model's k completions averaged per prompt)",
        "metrics": metrics, "correlations": correlations,
    }


def write_table(out: Path, table: Sequence[dict[str, Any]]) -> None:
    """completions.jsonl and completions.csv, written atomically."""
    import json

    write_text(out / "completions.jsonl", "".join(json.dumps(r) + "\n" for r in table))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in table:
        w.writerow(r)
    write_text(out / "completions.csv", buf.getvalue())


def load_table(out: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(out) / "completions.jsonl")


# ----- figures -----

def write_figures(out: Path, table: Sequence[dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"pre": "#4C72B0", "post": "#DD8452"}
    has_true = "true_reward" in summary["metrics"]
    panels = ["probe_score", "dpo_reward", "true_reward" if has_true else "length"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    for ax, metric in zip(axes, panels):
        vals = {m: np.asarray([r[metric] for r in table if r["model"] == m and r[metric] is not None], dtype=float)
                for m in ("pre", "post")}
        both = np.concatenate(list(vals.values()))
        if both.size == 0:
            continue
        bins = np.linspace(both.min(), both.max() + 1e-9, 30)
        for m in ("pre", "post"):
            ax.hist(vals[m], bins=bins, alpha=0.55, color=colors[m], label=f"{m}-RL")
        s = summary["metrics"].get(metric)
        if s:
            ax.set_title(f"{METRIC_LABELS[metric]}\npost − pre {s['diff']:+.3g} [{s['ci_lo']:+.3g}, {s['ci_hi']:+.3g}]",
                         fontsize=9)
        ax.set_xlabel(METRIC_LABELS[metric])
        ax.legend(fontsize=8)
    fig.tight_layout()
    figures = {"distributions": "distributions.png"}
    save_figure(fig, out / figures["distributions"])

    other = "true_reward" if has_true else "dpo_reward"
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for m in ("pre", "post"):
        pts = [(r[other], r["probe_score"]) for r in table if r["model"] == m and r["probe_score"] is not None]
        if pts:
            x, y = zip(*pts)
            jitter = np.random.default_rng(0).normal(0, 0.03, len(x)) if has_true else 0.0
            ax.scatter(np.asarray(x) + jitter, y, s=7, alpha=0.5, color=colors[m], label=f"{m}-RL")
    c = summary["correlations"].get(f"probe_vs_{other}")
    title = f"probe score vs {METRIC_LABELS[other]}"
    if c:
        title += f"\nPearson r {c['pearson']:.3g} [{c['pearson_lo']:.3g}, {c['pearson_hi']:.3g}]"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(METRIC_LABELS[other])
    ax.set_ylabel("probe score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures["probe_vs_truth"] = "probe_vs_truth.png"
    save_figure(fig, out / figures["probe_vs_truth"])
    return figures


# ----- command line -----

def add_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML file (top-level keys, or a `compare:` section)")
    parser.add_argument("--pre", help="pre-RL model: hub id or local directory (default: the organism's SFT model)")
    parser.add_argument("--post", help="post-RL model (default: the organism's DPO model)")
    parser.add_argument("--probe", help="probe file (.safetensors or .pt)")
    parser.add_argument("--prompts", help="split name of --dataset (e.g. test_prefs) or a prompts file")
    parser.add_argument("--dataset", help="dataset the split comes from (default: the organism's data)")
    parser.add_argument("-n", "--n", type=int, help="prompts (default 200)")
    parser.add_argument("-k", "--k", type=int, help="completions per prompt and model (default 4)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--beta", type=float, help="DPO beta of the implicit reward (default: organism's or 0.1)")
    parser.add_argument("--rater", choices=("auto", "organism", "none"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--sample-batch-size", type=int)
    parser.add_argument("--organism-size", choices=("tiny", "demo"), help="the organism used where --pre/--post/"
                        "--dataset are left out (default demo)")
    parser.add_argument("--dtype")
    parser.add_argument("--device")
    parser.add_argument("--out", help="output directory")


def config_from_args(args) -> CompareConfig:
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        raw = load_yaml(args.config)
        data = dict(raw["compare"] if "compare" in raw else raw)
    for key in ("pre", "post", "probe", "prompts", "dataset", "n", "k", "seed", "max_new_tokens", "beta", "rater",
                "batch_size", "sample_batch_size", "organism_size", "dtype", "device", "out"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    return CompareConfig.from_dict(data, where="compare")


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['n_prompts']} prompts × {summary['k']} completions per model; "
             f"paired over prompts; p: {summary['test']}",
             f"{'':<22}{'pre':>10}{'post':>10}{'post − pre [95% CI]':>32}{'p':>11}"]
    for metric in METRICS:
        s = summary["metrics"].get(metric)
        if s:
            ci = f"{s['diff']:+.3f} [{s['ci_lo']:+.3f}, {s['ci_hi']:+.3f}]"
            lines.append(f"{METRIC_LABELS[metric]:<22}{s['mean_pre']:>10.3f}{s['mean_post']:>10.3f}{ci:>32}"
                         f"{s['p_value']:>11.2e}")
    for name, c in summary["correlations"].items():
        lines.append(f"{name}: Pearson r {c['pearson']:.3f} [{c['pearson_lo']:.3f}, {c['pearson_hi']:.3f}], "
                     f"Spearman {c['spearman']:.3f} (n={c['n']})")
    return "\n".join(lines)


def main(args) -> int:
    cfg = config_from_args(args)
    result = run_compare(cfg)
    print(format_summary(result.summary))
    print(f"table: {result.out_dir / 'completions.jsonl'}; summary: {result.out_dir / 'compare.json'}")
    return 0
