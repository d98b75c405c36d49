"""What the analysis stages read from the stages before them: the comparison's scored completions, and the
sweep's training pairs at one position (to refit probes like the sweep's)."""
from __future__ import annotations

from pathlib import Path

from rsearch.activations import extract
from rsearch.chat import encode_conversation
from rsearch.data import load_splits
from rsearch.hooks import HookPoint
from rsearch.jobs.compare_table import load_table
from rsearch.jobs.train_probe import PROMPT_ONLY, TrainProbeConfig, encode_pairs, fit_config_of, probe_data
from rsearch.lm import ModelCache
from rsearch.log import show_progress
from rsearch.results import SweepResult
from rsearch.subjects import Subjects


def compare_rows(subjects: Subjects, models: ModelCache, compare_dir: Path):
    """The comparison's scored completions, encoded with the post-RL model's tokenizer."""
    _, tok = models.get(subjects.post)
    table = [r for r in load_table(compare_dir) if r["probe_score"] is not None]
    rows = [encode_conversation(tok, r.get("messages") or r["prompt"], r["completion"]) for r in table]
    return table, rows, tok


def probe_training_data(sweep: SweepResult, models: ModelCache, layers: list[int], position: str):
    """The sweep's train and validation pairs at `position` for each of `layers`, read by the sweep's model:
    ({layer: train ProbeData}, {layer: val ProbeData}, the sweep's FitConfig at that position, probe kind)."""
    cfg = TrainProbeConfig.from_dict(sweep.config)
    model, tok = models.get(cfg.model, cfg.revision)
    splits = load_splits(cfg.dataset, cfg.train_split, cfg.test_split, cfg.val_fraction, seed=cfg.seed,
                         max_train=cfg.max_train, max_test=cfg.max_test)
    objective = "regression" if cfg.objective == "pairwise" and position in PROMPT_ONLY else cfg.objective
    fit = fit_config_of(cfg, objective)
    hooks = {L: HookPoint(L, sweep.hook_kind).name for L in layers}
    data: dict[str, dict[int, object]] = {}
    for name in ("train", "val"):
        rows, kept = encode_pairs(tok, splits[name], cfg.max_tokens)
        acts = extract(model, rows, list(hooks.values()), [position], pad_id=tok.pad_token_id,
                       batch_size=cfg.extract_batch_size, progress=show_progress())
        data[name] = {L: probe_data(acts[(h, position)], kept, rows, objective) for L, h in hooks.items()}
    return data["train"], data["val"], fit, cfg.probe_kind
