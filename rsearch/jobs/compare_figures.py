"""compare's figures: score distributions of both models, and probe score against the truth."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rsearch.io_utils import save_figure
from rsearch.jobs.compare_table import METRIC_LABELS


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
