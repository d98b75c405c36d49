"""`rsearch compare`: do the post-RL model's completions score higher under the probe than the pre-RL model's?

For the same N prompts, k completions are sampled from each model (same seeded sampling settings, the model's
own distribution). Every completion is then scored four ways:

- the reward probe, through the probe's own host model (`ProbeScorer`);
- the DPO implicit reward β·(log π_post(y|x) − log π_pre(y|x)), teacher-forced, summed over the completion's
  tokens (and the end-of-turn token that closes it);
- its length in tokens;
- its reward by a rater, where one is known or given (the embedded organism's, a local reward model or a Python
  callable: `rsearch.raters`); the column is `true_reward`.

Per prompt the k values of each model are averaged; the paired differences post − pre across prompts give the
mean difference, a seeded bootstrap 95% CI over prompts and a Wilcoxon signed-rank p-value
(`rsearch.analysis.stats`). The per-completion table (`completions.jsonl` / `.csv`) is written next to the
summary (`compare.json`), which is computed from it alone; figures: the score distributions and probe score
against true reward (or against the DPO reward when no rater is known).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsearch.chat import encode_conversation
from rsearch.config import Config, add_config_arguments, check, check_device, config_from_args, setting
from rsearch.io_utils import output_dir
from rsearch.errors import RsearchError
from rsearch.jobs.compare_figures import write_figures
from rsearch.jobs.compare_table import METRIC_LABELS, METRICS, summarize, write_table
from rsearch.lm import ModelCache, sample_completions, sequence_logprobs
from rsearch.log import show_progress
from rsearch.prompts import load_prompts, user_text
from rsearch.raters import check_spec as check_rater
from rsearch.raters import load_rater
from rsearch.results import ComparisonResult
from rsearch.subjects import Subjects, resolve_subjects
from rsearch.distributed import ShardMaps
from rsearch.probes import load_probe
from rsearch.scorer import ProbeScorer

log = logging.getLogger("rsearch.compare")


@dataclass(frozen=True)
class CompareConfig(Config):
    """Settings of `rsearch compare`; each field's help is its flag's."""

    pre: str = setting("", help="pre-RL model: hub id, local directory, .gguf file or a short name such as "
                             "smollm2-135m-instruct (default: the organism's SFT model)")
    post: str = setting("", help="post-RL model (default: the organism's DPO model)")
    probe: str = setting("", help="probe file (.safetensors or .pt); read through the model its metadata names")
    prompts: str = setting("test_prefs", help="split name of --dataset (e.g. test_prefs) or a prompts file "
                           "(.txt one a line, or .jsonl/.parquet with the ultrafeedback schema or a prompt column)")
    dataset: str = setting("", help="dataset the split comes from (default: the organism's data)")
    n: int = setting(200, short="-n", help="prompts (a seeded sample of the distinct prompts)")
    k: int = setting(4, short="-k", help="completions per prompt and model")
    seed: int = setting(0)
    max_new_tokens: int = setting(64)
    temperature: float = setting(1.0)
    max_prompt_tokens: int = setting(1024, help="prompts longer than this (with the completion) are left out")
    sample_batch_size: int = setting(64, help="sequences per sampling batch (the sampling seeds depend on it)")
    batch_size: int = setting(16, help="rows per teacher-forced forward")
    beta: float | None = setting(None, help="DPO beta of the implicit reward (default: the organism's or 0.1)")
    rater: str = setting("auto", help="auto (the organism's rater for the organism's models), organism, none, a "
                         "local reward model directory, module.path:callable (rater(prompt, completion) -> float), or "
                         "judge:MODEL (a judge model at $RSEARCH_JUDGE_URL)")
    dtype: str = setting("float32")
    device: str = setting("auto", runtime=True)
    decode: str = setting("static", runtime=True, choices=("plain", "static", "compiled"),
                          help="decode loop: plain, static (KV cache, finished rows leave), compiled (CUDA graphs)")
    workers: int = setting(0, runtime=True, help="Ray workers for sampling and log-probs (0: in this process)")
    ray_address: str = setting("", runtime=True, help="Ray cluster to join (auto: the one `ray start` began)")
    revision_pre: str | None = setting(None)
    revision_post: str | None = setting(None)
    n_boot: int = setting(2000, help="bootstrap resamples")
    organism_size: str = setting("demo", choices=("tiny", "demo"),
                                 help="the organism used where --pre/--post/--dataset are left out")
    out: str = setting("runs/compare", runtime=True, help="output directory")

    def __post_init__(self) -> None:
        check(self.n >= 2, f"n: need at least 2 prompts for paired statistics, got {self.n}")
        check(self.k >= 1, f"k: need at least 1 completion per prompt, got {self.k}")
        check(self.max_new_tokens >= 1, "max_new_tokens: must be at least 1")
        check(self.temperature > 0, "temperature: must be positive")
        check(self.beta is None or self.beta > 0, f"beta: must be positive, got {self.beta}")
        check_rater(self.rater)
        check(self.n_boot >= 100, "n_boot: use at least 100 bootstrap resamples")
        check(self.sample_batch_size >= 1 and self.batch_size >= 1, "batch sizes must be at least 1")
        check_device(self.device)


@dataclass(frozen=True)
class CompareRun:
    """What `run_compare` returns: the summary (compare.json), the per-completion table and where they are."""

    summary: ComparisonResult
    table: list[dict[str, Any]]
    out_dir: Path


def compare_subjects(cfg: CompareConfig) -> Subjects:
    prompts_file = Path(cfg.prompts).expanduser().is_file()
    return resolve_subjects(pre=cfg.pre, post=cfg.post, dataset=cfg.dataset, rater=cfg.rater, beta=cfg.beta,
                            organism_size=cfg.organism_size, seed=cfg.seed, need_dataset=not prompts_file)


# ----- the job -----

def same_weights(pre: str, post: str, revision_pre: str | None = None, revision_post: str | None = None) -> bool:
    """Whether pre and post name the same model: the same path (resolved) or hub id at the same revision."""
    a, b = Path(pre).expanduser(), Path(post).expanduser()
    if a.exists() or b.exists():
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    return pre == post and (revision_pre or "main") == (revision_post or "main")


def run_compare(cfg: CompareConfig, models: ModelCache | None = None) -> CompareRun:
    """Runs the comparison (see the module docstring) and writes its outputs under `cfg.out`."""
    if not cfg.probe:
        raise RsearchError("no probe given: pass --probe FILE (e.g. runs/probes/best_probe.safetensors)")
    if not Path(cfg.probe).expanduser().is_file():
        raise RsearchError(f"probe file not found: {cfg.probe}")
    t0 = time.perf_counter()
    subjects = compare_subjects(cfg)
    if same_weights(subjects.pre, subjects.post, cfg.revision_pre, cfg.revision_post):
        log.warning("pre and post are the same model: every post − pre difference is 0 by construction, so its "
                    "tests and correlations are undefined (nan); give the pre-RL and post-RL models")
    models = models or ModelCache(cfg.dtype, cfg.device)
    prompts = load_prompts(cfg.prompts, subjects.dataset, cfg.n, cfg.seed)
    pre_model, pre_tok = models.get(subjects.pre, cfg.revision_pre)
    post_model, post_tok = models.get(subjects.post, cfg.revision_post)
    prompts = [(pid, m) for pid, m in prompts
               if len(encode_conversation(post_tok, m, None)) + cfg.max_new_tokens <= cfg.max_prompt_tokens]
    if len(prompts) < 2:
        raise RsearchError(f"fewer than 2 prompts fit max_prompt_tokens={cfg.max_prompt_tokens}")
    probe_sample = encode_conversation(post_tok, prompts[0][1], "ok").ids
    if encode_conversation(pre_tok, prompts[0][1], "ok").ids != probe_sample:
        raise RsearchError("the pre- and post-RL tokenizers encode the same conversation differently: "
                           "compare needs models of one tokenizer")

    # one sampling pass per model, the same seeds and batches for both
    log.info(f"sampling {cfg.k} completions × {len(prompts)} prompts from each model")
    messages = [m for _, m in prompts]
    shards = _shard_maps(cfg, subjects, Path(cfg.out) / "shards")
    names = {"pre": (subjects.pre, cfg.revision_pre), "post": (subjects.post, cfg.revision_post)}
    sampled = {name: sample_completions(model, post_tok, messages, cfg.k, seed=cfg.seed,
                                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                        batch_size=cfg.sample_batch_size, progress=show_progress(),
                                        desc=f"sample {name}", decode=cfg.decode,
                                        map_batches=shards and shards.sampler(*names[name]))
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

    log.info(f"scoring {len(rows)} completions: log-probs under both models, the probe, the rater")
    lp = {name: sequence_logprobs(model, rows, pad_id=post_tok.pad_token_id, eos_id=post_tok.eos_token_id,
                                  batch_size=cfg.batch_size, progress=show_progress(), desc=f"log-probs {name}",
                                  map_batches=shards and shards.logprobs(*names[name]))
          for name, model in (("pre", pre_model), ("post", post_model))}
    if shards:
        shards.close()
    scorer = _scorer(cfg, models, subjects)
    score_rows = rows if scorer.tokenizer is post_tok else [
        encode_conversation(scorer.tokenizer, m, table[j]["completion"]) for m, j in zip(row_messages, where)]
    probe_scores = scorer.score_rows(score_rows).probe
    for n_row, j in enumerate(where):
        rec = table[j]
        rec["probe_score"] = float(probe_scores[n_row])
        rec["logp_pre"], rec["logp_post"] = float(lp["pre"][n_row]), float(lp["post"][n_row])
        rec["dpo_reward"] = subjects.beta * (rec["logp_post"] - rec["logp_pre"])
    rater = load_rater(subjects.rater, device=cfg.device, batch_size=cfg.batch_size)
    if rater is not None:
        for rec, value in zip(table, rater.rate([r["messages"] for r in table], [r["completion"] for r in table])):
            rec["true_reward"] = float(value)

    out = Path(cfg.out)
    write_table(out, table)
    summary = summarize(table, n_boot=cfg.n_boot, seed=cfg.seed)
    summary.update({
        "config": cfg.to_dict(), "pre": subjects.pre, "post": subjects.post, "dataset": subjects.dataset,
        "prompts": cfg.prompts, "beta": subjects.beta, "beta_source": subjects.beta_source,
        "rater": subjects.rater, "k": cfg.k, "probe": str(cfg.probe),
        "probe_meta": {key: scorer.metadata.get(key) for key in ("model", "hook", "position", "objective")},
        "table": "completions.jsonl", "seconds": round(time.perf_counter() - t0, 2),
    })
    summary["figures"] = write_figures(out, table, summary)
    result = ComparisonResult.from_dict(summary)
    result.save(out)
    return CompareRun(result, table, out)


def _shard_maps(cfg: CompareConfig, subjects: Subjects, cache_dir: Path):
    """Ray workers for sampling and log-probs when asked for (`--workers`, `--ray-address`), else None. Each
    shard's result is kept under `cache_dir` as it arrives, so an interrupted comparison resumes per shard."""
    check(cfg.workers >= 0, f"workers: must be ≥ 0, got {cfg.workers}")
    if not (cfg.workers or cfg.ray_address):
        return None
    return ShardMaps(cfg.workers, cfg.ray_address or None, dtype=cfg.dtype, device=cfg.device, cache_dir=cache_dir)


def _scorer(cfg: CompareConfig, models: ModelCache, subjects: Subjects):
    """The probe's scorer, reading through the probe's own host model (pre or post when it is one of them)."""
    probe, meta = load_probe(cfg.probe)
    host = meta.get("model")
    loaded = None
    if same_model(host, subjects.pre) or same_model(host, subjects.post):
        loaded = models.find(host)
    elif host:
        loaded = models.get(host, meta.get("revision"))
    if loaded is None:
        raise RsearchError(f"{cfg.probe}: its metadata names no model to read it through")
    return ProbeScorer(probe, loaded[0], loaded[1], metadata=meta, batch_size=cfg.batch_size)


def same_model(a: str | None, b: str) -> bool:
    """Whether two model names (hub ids or paths, however spelled) name the same model."""
    norm = lambda name: str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name  # noqa: E731
    return bool(a) and norm(a) == norm(b)


# ----- command line -----

def add_arguments(parser) -> None:
    add_config_arguments(parser, CompareConfig, config_file="YAML file (top-level keys, or a `compare:` section), "
                         "or a shipped recipe by name (zephyr)")


def format_summary(s: ComparisonResult) -> str:
    summary = s.to_dict()
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
    cfg = config_from_args(args, CompareConfig, "compare")
    with output_dir(cfg.out):
        result = run_compare(cfg)
    print(format_summary(result.summary))
    print(f"table: {result.out_dir / 'completions.jsonl'}; summary: {result.out_dir / 'compare.json'}")
    return 0
