"""`rsearch train-probe`: probes on residual-stream activations, for one hook point or a layer × position sweep.

One extraction pass (into the resumable activation store) serves every hook × position of a sweep. Each
probe is fitted on train, chosen by its validation metric, and reported on test next to its two controls
(a completion-length predictor and the same probe trained on shuffled labels). At `user_end` every
completion of a prompt shares one activation, so a pairwise objective has nothing to learn there: those
positions are fitted as regression on the rating (the expected reward given the prompt) and say so.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rsearch.probes.fitters import FitConfig
from rsearch.activations import build_store, default_store_root
from rsearch.chat import encode_conversation
from rsearch.config import Config, add_config_arguments, check, config_from_args, setting
from rsearch.data import FeedbackPair, load_splits
from rsearch.errors import RsearchError
from rsearch.hooks import n_layers, parse_hook
from rsearch.io_utils import atomic_path, save_figure, write_text
from rsearch.log import show_progress
from rsearch.models import load_model, model_fingerprint
from rsearch.positions import parse_position
from rsearch.results import SweepResult
from rsearch.subjects import resolve_subjects

SWEEP_POSITIONS = ("user_end", "completion_start", "completion_frac:0.5", "completion_end", "-1", "completion_mean")
PROMPT_ONLY = ("user_end",)


@dataclass(frozen=True)
class TrainProbeConfig(Config):
    """Args:
        model: hub id or local HF directory; empty means the embedded organism's post-RL model.
        dataset: hub id, local JSONL/parquet file or a directory of `{split}.jsonl`; empty means the organism's.
        hook: hook point for a single probe; empty means the middle layer's resid_pre.
        position: position spec for a single probe (see rsearch.positions).
        sweep: fit a probe for every layer in `layers` (all when empty) × every spec in `positions`.
        max_tokens: pairs with a conversation longer than this are left out (and counted).
    """

    model: str = setting("", help="hub id or local HF model directory (default: the organism's post-RL model)")
    revision: str | None = setting(None, help="model revision")
    dtype: str = setting("float32", help="model dtype")
    device: str = setting("auto", runtime=True, help="cpu, cuda or auto")
    trust_remote_code: bool = setting(False, help="run the model repository's own code (only on request)")
    dataset: str = setting("", help="hub id, JSONL/parquet file or directory (default: the organism's data)")
    train_split: str = setting("train_prefs")
    test_split: str | None = setting("test_prefs")
    val_fraction: float = setting(0.1, help="share of train pairs held out for validation")
    max_train: int | None = setting(None, help="train pairs (default all)")
    max_test: int | None = setting(None, help="test pairs (default all)")
    max_tokens: int = setting(2048, help="pairs with a longer conversation are left out")
    hook: str = setting("", help="hook point, e.g. blocks.24.hook_resid_pre or 24.resid_pre")
    position: str = setting("-1", help="-1, user_end, completion_start, completion_frac:F, completion_mean, …")
    sweep: bool = setting(False, help="every layer × the listed positions")
    layers: tuple[int, ...] = setting((), help="comma-separated layers for --sweep (default: all)")
    hook_kind: str = setting("resid_pre", choices=("resid_pre", "resid_post"))
    positions: tuple[str, ...] = setting(SWEEP_POSITIONS, help="comma-separated positions for --sweep")
    probe_kind: str = setting("linear", choices=("linear", "mlp"))
    # fitting: FitConfig's defaults, so the job and the library never disagree
    objective: str = setting(FitConfig.objective, choices=("pairwise", "regression", "classification"))
    fitter: str = setting(FitConfig.fitter, choices=("fast", "sgd"))
    lr: float = setting(FitConfig.lr)
    batch_size: int = setting(FitConfig.batch_size, help="probe training batch size")
    weight_decay: float = setting(FitConfig.weight_decay)
    max_epochs: int = setting(FitConfig.max_epochs)
    patience: int = setting(FitConfig.patience)
    extract_batch_size: int = setting(16, help="rows per extraction forward pass")
    store_dtype: str = setting("float32", choices=("float32", "float16"), help="activation store dtype")
    store_dir: str = setting("", runtime=True, help="activation store root (default $RSEARCH_HOME/activations)")
    organism_size: str = setting("demo", choices=("tiny", "demo"),
                                 help="the organism used where --model/--dataset are left out")
    seed: int = setting(0)
    out: str = setting("runs/train-probe", runtime=True, help="output directory")

    def __post_init__(self) -> None:
        check(0 < self.val_fraction < 0.5, f"val_fraction: must be in (0, 0.5), got {self.val_fraction}")
        check(self.hook_kind in ("resid_pre", "resid_post"), f"hook_kind: unknown {self.hook_kind!r}")
        check(self.store_dtype in ("float32", "float16"), "store_dtype: use float32 or float16")
        check(self.extract_batch_size >= 1, "extract_batch_size: must be at least 1")
        check(self.max_tokens >= 4, "max_tokens: must be at least 4")
        check(bool(self.positions), "positions: give at least one position for a sweep")
        for p in self.positions + (self.position,):
            parse_position(p)
        if self.hook:
            parse_hook(self.hook)


@dataclass(frozen=True)
class ProbeRow:
    """One fitted probe's line of the metrics table."""

    hook: str
    layer: int
    position: str
    objective: str
    val: dict[str, float]
    test: dict[str, float]
    length_control: dict[str, float]
    shuffled_control: dict[str, float]
    seconds: float
    path: str


@dataclass(frozen=True)
class TrainProbeResult:
    rows: tuple[ProbeRow, ...]
    best: ProbeRow
    out_dir: Path
    n_pairs: dict[str, int]


def encode_pairs(tokenizer, pairs: Sequence[FeedbackPair], max_tokens: int) -> tuple[list, list[FeedbackPair]]:
    """Two rows per kept pair (chosen, rejected); pairs with a row over max_tokens are dropped."""
    rows, kept = [], []
    for p in pairs:
        chosen = encode_conversation(tokenizer, list(p.prompt), p.chosen)
        rejected = encode_conversation(tokenizer, list(p.prompt), p.rejected)
        if max(len(chosen), len(rejected)) <= max_tokens:
            rows += [chosen, rejected]
            kept.append(p)
    return rows, kept


def probe_data(x: torch.Tensor, pairs: Sequence[FeedbackPair], rows: Sequence, objective: str):
    """ProbeData for rows laid out as (chosen, rejected) per pair."""
    from rsearch.probes import ProbeData

    m = len(pairs)
    ratings = torch.tensor([s for p in pairs for s in (p.score_chosen, p.score_rejected)], dtype=torch.float32)
    labels = torch.tensor([1.0, 0.0] * m)
    lengths = torch.tensor([r.completion[1] - r.completion[0] for r in rows], dtype=torch.float32)
    pair_idx = torch.arange(2 * m).view(m, 2)
    return ProbeData(x=x, y=labels if objective == "classification" else ratings, pairs=pair_idx, lengths=lengths)


def _selection_metric(metrics: dict[str, float], objective: str) -> float:
    key = "pearson" if objective == "regression" else "pairwise_acc"
    value = metrics.get(key, float("nan"))
    return float("-inf") if value != value else value


def train_probes(cfg: TrainProbeConfig) -> TrainProbeResult:
    """Runs the job; see the module docstring. Writes probes, metrics.csv/json and (sweeps) a heatmap."""
    from rsearch.probes import evaluate, fit_probe, save_probe, with_controls

    subjects = resolve_subjects(post=cfg.model, dataset=cfg.dataset, organism_size=cfg.organism_size, seed=cfg.seed,
                                need_pre=False)
    model_name, dataset = subjects.post, subjects.dataset
    out = Path(cfg.out)
    model, tokenizer = load_model(model_name, cfg.dtype, cfg.device, cfg.revision, cfg.trust_remote_code)
    n = n_layers(model)
    if cfg.sweep:
        layers = cfg.layers or tuple(range(n))
        hooks = [parse_hook(f"blocks.{L}.hook_{cfg.hook_kind}") for L in layers]
        positions = [parse_position(p) for p in cfg.positions]
    else:
        hooks = [parse_hook(cfg.hook or f"blocks.{n // 2}.hook_resid_pre")]
        positions = [parse_position(cfg.position)]
    for h in hooks:
        if not 0 <= h.layer < n:
            raise RsearchError(f"hook point {h.name} does not exist: the model has layers 0..{n - 1}")

    splits = load_splits(dataset, cfg.train_split, cfg.test_split, cfg.val_fraction, seed=cfg.seed,
                         max_train=cfg.max_train, max_test=cfg.max_test)
    encoded = {name: encode_pairs(tokenizer, pairs, cfg.max_tokens) for name, pairs in splits.items()}
    for name, (_, kept) in encoded.items():
        if not kept:
            raise RsearchError(f"every {name} pair is longer than max_tokens={cfg.max_tokens}")
    all_rows = [r for name in ("train", "val", "test") for r in encoded[name][0]]
    offsets, start = {}, 0
    for name in ("train", "val", "test"):
        offsets[name] = range(start, start + len(encoded[name][0]))
        start += len(encoded[name][0])

    store_root = Path(cfg.store_dir) if cfg.store_dir else default_store_root()
    store = build_store(model, all_rows, hooks, positions, root=store_root,
                        model_key=model_fingerprint(model, model_name), pad_id=tokenizer.pad_token_id,
                        batch_size=cfg.extract_batch_size, dtype=cfg.store_dtype, progress=show_progress())
    del model

    table: list[ProbeRow] = []
    for hook in hooks:
        for position in positions:
            objective = "regression" if cfg.objective == "pairwise" and position.spec in PROMPT_ONLY else cfg.objective
            fit_cfg = FitConfig(objective=objective, fitter=cfg.fitter, lr=cfg.lr, batch_size=cfg.batch_size,
                                weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs, patience=cfg.patience,
                                seed=cfg.seed)
            data = {name: probe_data(store.tensor(hook, position, list(offsets[name])), encoded[name][1],
                                     encoded[name][0], objective) for name in offsets}
            t0 = time.perf_counter()
            probe, _history = fit_probe(cfg.probe_kind, data["train"], data["val"], fit_cfg)
            seconds = time.perf_counter() - t0
            controls = with_controls(cfg.probe_kind, data["train"], data["val"], data["test"], fit_cfg, probe=probe)
            val_metrics = evaluate(probe, data["val"], objective)
            test_metrics = controls["probe"]
            path = out / "probes" / f"layer{hook.layer:02d}.{hook.kind}.{_safe(position.spec)}.safetensors"
            save_probe(path, probe, {
                "model": model_name, "revision": cfg.revision, "hook": hook.name, "position": position.spec,
                "objective": objective, "dataset": dataset, "metrics": {"val": val_metrics, "test": test_metrics},
                "fitter": cfg.fitter,
            })
            table.append(ProbeRow(hook.name, hook.layer, position.spec, objective, val_metrics, test_metrics,
                                  controls["length"], controls["shuffled"], seconds, str(path)))

    best = max(table, key=lambda r: (_selection_metric(r.val, r.objective) if r.objective == cfg.objective
                                     else float("-inf")))
    best_path = out / "best_probe.safetensors"
    with atomic_path(best_path) as tmp:
        tmp.write_bytes(Path(best.path).read_bytes())
    write_metrics(out, table, best, cfg, {k: len(v[1]) for k, v in encoded.items()})
    if cfg.sweep:
        write_heatmap(out / "heatmap.png", table)
    return TrainProbeResult(tuple(table), best, out, {k: len(v[1]) for k, v in encoded.items()})


def _safe(spec: str) -> str:
    return spec.replace(":", "").replace("-", "m").replace(".", "p")


CSV_COLUMNS = ("hook", "layer", "position", "objective", "test_pairwise_acc", "test_pairwise_acc_lo",
               "test_pairwise_acc_hi", "test_pearson", "test_spearman", "test_auroc", "val_pairwise_acc",
               "val_pearson", "length_pairwise_acc", "length_pearson", "shuffled_pairwise_acc", "shuffled_pearson",
               "seconds", "path")


def _flat(row: ProbeRow) -> dict[str, Any]:
    return {
        "hook": row.hook, "layer": row.layer, "position": row.position, "objective": row.objective,
        **{f"test_{k}": row.test.get(k) for k in ("pairwise_acc", "pairwise_acc_lo", "pairwise_acc_hi", "pearson",
                                                  "spearman", "auroc")},
        "val_pairwise_acc": row.val.get("pairwise_acc"), "val_pearson": row.val.get("pearson"),
        "length_pairwise_acc": row.length_control.get("pairwise_acc"),
        "length_pearson": row.length_control.get("pearson"),
        "shuffled_pairwise_acc": row.shuffled_control.get("pairwise_acc"),
        "shuffled_pearson": row.shuffled_control.get("pearson"),
        "seconds": round(row.seconds, 4), "path": row.path,
    }


def write_metrics(out: Path, table: Sequence[ProbeRow], best: ProbeRow, cfg: TrainProbeConfig,
                  n_pairs: dict[str, int]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in table:
        writer.writerow(_flat(row))
    write_text(out / "metrics.csv", buf.getvalue())
    SweepResult(config=cfg.to_dict(), n_pairs=n_pairs, best=_flat(best),
                best_probe=str(out / "best_probe.safetensors"),
                rows=[{**_flat(r), "val": r.val, "test": r.test, "length_control": r.length_control,
                       "shuffled_control": r.shuffled_control} for r in table]).save(out)


def write_heatmap(path: Path, table: Sequence[ProbeRow]) -> None:
    """Layer × position → held-out pairwise accuracy, and beside it Pearson r with the ratings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({r.layer for r in table})
    positions = list(dict.fromkeys(r.position for r in table))
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.1 * len(positions) * 2, 1.2 + 0.35 * len(layers)))
    for ax, key, title in ((axes[0], "pairwise_acc", "held-out pairwise accuracy"),
                           (axes[1], "pearson", "held-out Pearson r with rating")):
        grid = np.full((len(layers), len(positions)), np.nan)
        for r in table:
            grid[layers.index(r.layer), positions.index(r.position)] = r.test.get(key, np.nan)
        im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(positions)), positions, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(L) for L in layers], fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=10)
        for i in range(len(layers)):
            for j in range(len(positions)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def add_arguments(parser) -> None:
    add_config_arguments(parser, TrainProbeConfig, config_file="YAML file (top-level keys, or a `train_probe:` "
                         "section), or a shipped recipe by name (zephyr)")


def main(args) -> int:
    cfg = config_from_args(args, TrainProbeConfig, "train_probe")
    result = train_probes(cfg)
    b = result.best
    print(f"pairs: train {result.n_pairs['train']}, val {result.n_pairs['val']}, test {result.n_pairs['test']}")
    print(f"{'hook':<28}{'position':<22}{'objective':<12}{'test acc [95% CI]':<24}{'pearson':>8}"
          f"{'len acc':>9}{'shuf acc':>9}")
    for r in result.rows:
        acc = r.test.get("pairwise_acc", float("nan"))
        ci = f"{acc:.3f} [{r.test.get('pairwise_acc_lo', float('nan')):.3f}, {r.test.get('pairwise_acc_hi', float('nan')):.3f}]"
        print(f"{r.hook:<28}{r.position:<22}{r.objective:<12}{ci:<24}{r.test.get('pearson', float('nan')):>8.3f}"
              f"{r.length_control.get('pairwise_acc', float('nan')):>9.3f}"
              f"{r.shuffled_control.get('pairwise_acc', float('nan')):>9.3f}")
    print(f"best (by validation): {b.hook} @ {b.position} → {result.out_dir / 'best_probe.safetensors'}")
    print(f"metrics: {result.out_dir / 'metrics.csv'}")
    return 0
