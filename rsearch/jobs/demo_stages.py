"""The demo's analysis stages after the sweep and the comparison: the source probe and the direction analysis.

Each reads its own section of the config and its upstream stages' results (the sweep's layers and hook kind,
the comparison's completions and batch size), writes its JSON and figure under `directory`.
"""
from __future__ import annotations

from pathlib import Path

from rsearch.chat import encode_conversation
from rsearch.jobs.compare_table import load_table
from rsearch.jobs.demo_config import DirectionConfig, SourceConfig
from rsearch.jobs.demo_plots import plot_direction, plot_source
from rsearch.lm import ModelCache
from rsearch.log import show_progress
from rsearch.results import ComparisonResult, DirectionResult, SourceResult, SweepResult
from rsearch.subjects import Subjects


def compare_rows(subjects: Subjects, models: ModelCache, compare_dir: Path):
    """The comparison's scored completions, encoded with the post-RL model's tokenizer."""
    _, tok = models.get(subjects.post)
    table = [r for r in load_table(compare_dir) if r["probe_score"] is not None]
    rows = [encode_conversation(tok, r.get("messages") or r["prompt"], r["completion"]) for r in table]
    return table, rows, tok


def run_source(cfg: SourceConfig, seed: int, subjects: Subjects, sweep: SweepResult, compare: ComparisonResult,
               models: ModelCache, directory: Path) -> SourceResult:
    from rsearch.analysis.source_probe import source_probe

    table, rows, tok = compare_rows(subjects, models, directory.parent / "compare")
    model, _ = models.get(subjects.post)
    got = source_probe(model, tok, rows, [int(r["model"] == "post") for r in table],
                       [r["prompt_index"] for r in table], [r["length"] for r in table], layers=sweep.layers,
                       positions=cfg.positions, hook_kind=sweep.hook_kind, seed=seed,
                       batch_size=compare.config["batch_size"], progress=show_progress())
    got["reader"] = subjects.post
    result = SourceResult.from_dict(got)
    result.save(directory)
    plot_source(directory / "source.png", result)
    return result


def probe_training_data(sweep: SweepResult, models: ModelCache, layers: list[int], position: str):
    """The sweep's train and validation pairs at `position` for each of `layers`, read by the sweep's model:
    ({layer: train ProbeData}, {layer: val ProbeData}, the sweep's FitConfig at that position, probe kind)."""
    from rsearch.activations import extract
    from rsearch.data import load_splits
    from rsearch.jobs.train_probe import PROMPT_ONLY, TrainProbeConfig, encode_pairs, probe_data
    from rsearch.probes import FitConfig

    cfg = TrainProbeConfig.from_dict(sweep.config)
    model, tok = models.get(cfg.model, cfg.revision)
    splits = load_splits(cfg.dataset, cfg.train_split, cfg.test_split, cfg.val_fraction, seed=cfg.seed,
                         max_train=cfg.max_train, max_test=cfg.max_test)
    objective = "regression" if cfg.objective == "pairwise" and position in PROMPT_ONLY else cfg.objective
    fit = FitConfig(objective=objective, fitter=cfg.fitter, lr=cfg.lr, batch_size=cfg.batch_size,
                    weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs, patience=cfg.patience, seed=cfg.seed)
    hooks = {L: f"blocks.{L}.hook_{sweep.hook_kind}" for L in layers}
    data: dict[str, dict[int, object]] = {}
    for name in ("train", "val"):
        rows, kept = encode_pairs(tok, splits[name], cfg.max_tokens)
        acts = extract(model, rows, list(hooks.values()), [position], pad_id=tok.pad_token_id,
                       batch_size=cfg.extract_batch_size, progress=show_progress())
        data[name] = {L: probe_data(acts[(h, position)], kept, rows, objective) for L, h in hooks.items()}
    return data["train"], data["val"], fit, cfg.probe_kind


def run_direction(cfg: DirectionConfig, seed: int, subjects: Subjects, sweep: SweepResult,
                  compare: ComparisonResult, models: ModelCache, directory: Path) -> DirectionResult:
    from rsearch.analysis.direction import capture_both, direction_vs_update, shuffled_probe_directions
    from rsearch.probes import load_probe

    table, rows, tok = compare_rows(subjects, models, directory.parent / "compare")
    position = sweep.best["position"]
    probe_paths = {int(r["layer"]): r["path"] for r in sweep.rows if r["position"] == position}
    layers = sorted(probe_paths)
    pre, _ = models.get(subjects.pre)
    post, _ = models.get(subjects.post)
    pre_acts, post_acts = capture_both(pre, post, rows, layers, position, pad_id=tok.pad_token_id,
                                       hook_kind=sweep.hook_kind, batch_size=compare.config["batch_size"],
                                       progress=show_progress())
    probes = {L: load_probe(p)[0] for L, p in probe_paths.items()}
    shuffled = None
    if cfg.n_shuffled:
        train, val, fit, kind = probe_training_data(sweep, models, layers, position)
        seeds = [seed + 1000 + i for i in range(cfg.n_shuffled)]
        shuffled = {L: shuffled_probe_directions(train[L], val[L], fit, seeds, kind) for L in layers}
    got = direction_vs_update(pre_acts, post_acts, probes, position=position, hook_kind=sweep.hook_kind,
                              n_random=cfg.n_random, seed=seed, shuffled=shuffled,
                              written_by=[r["model"] for r in table], groups=[r["prompt_index"] for r in table],
                              n_boot=compare.config["n_boot"])
    got["inputs"] = (f"the comparison's {len(rows)} scored completions (both models'), read by both models (fixed "
                     f"texts); the same completions read by the post-RL model, by which model wrote them (writes)")
    result = DirectionResult.from_dict(got)
    result.save(directory)
    plot_direction(directory / "direction.png", result)
    return result
