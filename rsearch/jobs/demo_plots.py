"""The demo's figures: the source probe by layer, the RL update against the probe direction, the search."""
from __future__ import annotations

from pathlib import Path

from rsearch.io_utils import save_figure
from rsearch.results import DirectionResult, SearchOutcome, SourceResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_source(path: Path, result: SourceResult) -> None:
    got = result.to_dict()
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


def plot_direction(path: Path, result: DirectionResult) -> None:
    got = result.to_dict()
    plt = _pyplot()
    rows = got["rows"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    L = [r["layer"] for r in rows]
    ax.plot(L, [r["cos"] for r in rows], marker="o", label="cos(update, probe direction)")
    fam = [r["null_abs_cos_family95"] for r in rows]
    ax.fill_between(L, [-x for x in fam], fam, color="grey", alpha=0.25,
                    label=f"nulls' |cos| (activation-shaped, shuffled labels), corrected for {len(L)} layers")
    ax.plot(L, [r["isotropic_abs_cos_p95"] for r in rows], color="grey", ls=":", lw=0.8,
            label="isotropic 95th pct (scale only)")
    if any("shuffled_cos" in r for r in rows):
        for r in rows:
            ax.scatter([r["layer"]] * len(r.get("shuffled_cos", [])), r.get("shuffled_cos", []), s=6, color="C3",
                       alpha=0.6)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(L)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine")
    ax.set_title(f"RL update vs reward-probe direction at {got['position']} (dots: shuffled-label probes)", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def plot_search(path: Path, result: SearchOutcome) -> None:
    got = result.to_dict()
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
            s["true_vs_prefix"]["mean_post"] for s in got["strategies"]]
        ax.bar(range(len(names)), means, color=["grey", "grey"] + ["C%d" % i for i in range(len(got["strategies"]))])
        ax.set_xticks(range(len(names)), names, rotation=25, fontsize=8)
        ax.set_ylabel("rater's reward of post-RL answers")
    fig.tight_layout()
    save_figure(fig, path)
