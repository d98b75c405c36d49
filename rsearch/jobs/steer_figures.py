"""`rsearch steer`'s figures: the dose–response curves with their nulls, and the patching effects per layer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rsearch.io_utils import save_figure

PANELS = (("true_reward", "true reward"), ("probe_score", "probe score (unsteered reader)"),
          ("fluency", "fluency: mean log-prob (unsteered)"), ("length", "length (tokens)"))
TITLES = {"post_to_pre": "post-RL activation patched into the pre-RL run",
          "pre_to_post": "pre-RL activation patched into the post-RL run"}
STYLE = {"probe": ("C0", "probe direction"), "shuffled": ("C3", "shuffled-label probe"),
         "random": ("grey", "random directions")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_steering(path: Path, summaries: dict[str, dict[str, Any]], hook: str) -> None:
    """One row per steered model, one panel per metric: mean over prompts ± 95% CI against α, per direction."""
    plt = _pyplot()
    panels = [(m, label) for m, label in PANELS if any(m in s for s in summaries.values())]
    fig, axes = plt.subplots(len(summaries), len(panels), figsize=(3.3 * len(panels), 2.8 * len(summaries)),
                             squeeze=False)
    for row, (model, summary) in enumerate(summaries.items()):
        for col, (metric, label) in enumerate(panels):
            ax = axes[row][col]
            for kind, points in summary.get(metric, {}).get("curves", {}).items():
                color, name = STYLE.get(kind, ("black", kind))
                a = [p["alpha"] for p in points]
                ax.plot(a, [p["mean"] for p in points], marker="o", color=color, label=name)
                ax.fill_between(a, [p["lo"] for p in points], [p["hi"] for p in points], color=color, alpha=0.15)
            ax.axvline(0, color="black", lw=0.5)
            ax.set_xlabel("α (× typical activation norm)")
            ax.set_title(f"{model}-RL: {label}", fontsize=9)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"steering at {hook}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_patching(path: Path, patching: dict[str, Any]) -> None:
    """Per direction (post → pre, pre → post): the mean change of the DPO margin by layer, per position, with the
    null (another pair's activation) dashed; the mean margin itself for scale."""
    plt = _pyplot()
    rows = patching["rows"]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 3.3), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        mine = [r for r in rows if r["direction"] == direction]
        for i, position in enumerate(dict.fromkeys(r["position"] for r in mine)):
            pts = sorted((r for r in mine if r["position"] == position), key=lambda r: r["layer"])
            L = [r["layer"] for r in pts]
            ax.errorbar(L, [r["delta"]["mean"] for r in pts],
                        yerr=[[r["delta"]["mean"] - r["delta"]["lo"] for r in pts],
                              [r["delta"]["hi"] - r["delta"]["mean"] for r in pts]],
                        marker="o", color=f"C{i}", capsize=2,
                        label=position + (" (every completion token)" if position == "completion_mean" else ""))
            ax.plot(L, [r["delta_null"]["mean"] for r in pts], ls="--", color=f"C{i}", lw=0.8,
                    label=f"{position}: another pair's activation")
        ax.set_xticks(sorted({r["layer"] for r in mine}))
        ax.axhline(0, color="black", lw=0.5)
        ax.axhline(-patching["margin"]["mean"], color="grey", ls=":", lw=0.8, label="− mean margin (all of it)")
        ax.set_xlabel("layer patched")
        ax.set_ylabel("change of DPO margin")
        ax.set_title(TITLES.get(direction, direction), fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
