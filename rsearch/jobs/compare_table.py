"""compare's per-completion table (completions.jsonl / .csv) and every statistic of its summary, computed
from the table alone: per prompt each model's k values are averaged, then paired over prompts."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from rsearch.analysis.stats import METRICS_TEST, correlation, paired_summary, per_prompt_means
from rsearch.io_utils import read_jsonl, write_text

METRICS = ("probe_score", "dpo_reward", "length", "true_reward")
METRIC_LABELS = {"probe_score": "probe score", "dpo_reward": "DPO implicit reward", "length": "length (tokens)",
                 "true_reward": "true reward"}
TABLE_COLUMNS = ("prompt_index", "prompt_id", "model", "sample", "prompt", "completion", "length", "ended",
                 "probe_score", "logp_pre", "logp_post", "dpo_reward", "true_reward")


def summarize(table: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every statistic of the summary, computed from the per-completion table alone."""
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
    write_text(out / "completions.jsonl", "".join(json.dumps(r) + "\n" for r in table))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in table:
        w.writerow(r)
    write_text(out / "completions.csv", buf.getvalue())


def load_table(out: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(out) / "completions.jsonl")
