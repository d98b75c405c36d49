"""`rsearch train-probe`: probes on residual-stream activations, for one hook point or a layer × position sweep.

One extraction pass (into the resumable activation store) serves every hook × position of a sweep. Each
probe is fitted on train (its fitter's choices made on validation), the best cell chosen by k-fold
cross-validation over prompts on train + validation (`rsearch.probes.cross_validation`, with how often it wins when
the prompts are resampled), and reported on test next to its two controls
(a completion-length predictor and the same probe trained on shuffled labels) and, on the same test pairs, next
to the baselines of `rsearch.analysis.baselines` — bag of words + bigrams of the completion and of prompt +
completion (fitted on the same training pairs with the same fitter), the DPO implicit reward (with a pre-RL
model), the post-RL model's mean log-prob — with McNemar's test of the probe against each, and accuracies
against the truth and on minimal pairs where the data holds them. Layer 0's resid_pre is the token embeddings
(a bag of words itself): it is fitted and shown, but never the best probe.

At `user_end` every completion of a prompt shares one activation, so there the probe is a regression, one row per
prompt, on the expected reward of the policy's answer (`rsearch.analysis.expected_reward`): the mean true reward
of `expected_reward_k` answers sampled from the model read, with a rater; the mean of the prompt's ratings
without one. It is reported with that target's split-half reliability, a prompt bag-of-words ridge baseline and
the r within task where the data names tasks; `user_end_targets.jsonl` holds every prompt's values and target.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from rsearch.probes.fitters import FitConfig
from rsearch.activations import build_store, default_store_root
from rsearch.chat import TOO_LONG, context_length, encode_conversation, fit_length
from rsearch.config import (Config, add_config_arguments, check, check_device, check_positive, config_from_args,
                            setting)
from rsearch.data import FeedbackPair, load_splits
from rsearch.errors import RsearchError, one_line
from rsearch.hooks import HookPoint, n_layers, parse_hook
from rsearch.io_utils import atomic_path, output_dir, save_figure, write_text
from rsearch.log import show_progress
from rsearch.lm import ModelCache
from rsearch.models import (load_config, load_model, load_tokenizer, model_fingerprint, resolve_device,
                            resolve_model_path)
from rsearch.positions import parse_position
from rsearch.results import SweepResult
from rsearch.subjects import resolve_subjects
from rsearch.raters import check_spec, load_rater
from rsearch.probes import ProbeData, evaluate, fit_probe, load_probe, predict, save_probe, with_controls
from rsearch.analysis.planted_power import PlantedPowerConfig, planted_power
from rsearch.probes.cross_validation import cv_summary, out_of_fold, selection_frequency
from rsearch.analysis.baselines import (LABELS, accuracies, against_baselines, logprob_scores, pair_margins,
                                        pair_truth, strongest_text, text_baseline_scores)
from rsearch.analysis import expected_reward as er
from rsearch.distributed import ShardPool, sharded_capture

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
        pre: the pre-RL model, for the DPO implicit-reward baseline (empty: the organism's when `model` is left
            out, else that baseline is left out).
        rater: who rates the sampled answers of the user_end target and the test pairs' truth (see
            rsearch.raters; auto: the organism's rater for the organism's model, else none).
        expected_reward_k: answers sampled per prompt for the user_end target (with a rater).
        expected_reward_max_train: training prompts of the user_end probe (default all): sampling costs k
            answers per prompt.
    """

    model: str = setting("", help="hub id, local HF model directory, .gguf file or smollm2-135m-instruct "
                                    "(default: the organism's post-RL model)")
    revision: str | None = setting(None, help="model revision")
    dtype: str = setting("float32", help="model dtype")
    device: str = setting("auto", runtime=True, help="cpu, cuda or auto")
    trust_remote_code: bool = setting(False, help="run the model repository's own code (only on request)")
    dataset: str = setting("", help="hub id, JSONL/parquet file or directory (default: the organism's data)")
    train_split: str = setting("train_prefs")
    test_split: str | None = setting("test_prefs")
    val_fraction: float = setting(0.1, help="share of train pairs held out for validation")
    cv_folds: int = setting(5, help="the best probe is chosen by k-fold cross-validation over prompts (train + "
                            "validation pooled); 0: by the validation split alone")
    max_train: int | None = setting(None, help="train pairs (default all)")
    max_test: int | None = setting(None, help="test pairs (default all)")
    max_tokens: int = setting(2048, help="longest conversation read (also capped by the model's context)")
    too_long: str = setting("drop", choices=TOO_LONG, help="a pair with a longer conversation: drop it, or "
                            "truncate its prompt from the left (the completion stays whole)")
    hook: str = setting("", help="hook point, e.g. blocks.24.hook_resid_pre or 24.resid_pre")
    position: str = setting("-1", help="-1, user_end, completion_start, completion_end, completion_frac:F, "
                            "completion_mean, or any integer. -1 is the rendered conversation's last token, which a "
                            "chat template may put after the reply's end marker (ChatML's newline after "
                            "<|im_end|>): completion_end is the reply's last token")
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
    workers: int = setting(0, runtime=True, help="Ray workers for the extraction (0: in this process)")
    ray_address: str = setting("", runtime=True, help="Ray cluster to join (auto: the one `ray start` began)")
    organism_size: str = setting("demo", choices=("tiny", "demo"),
                                 help="the organism used where --model/--dataset are left out")
    pre: str = setting("", help="pre-RL model for the DPO implicit-reward baseline (default: the organism's when "
                       "--model is left out, else none)")
    rater: str = setting("auto", help="rater of the user_end target's sampled answers: auto, organism, none, a "
                         "reward model directory, module:callable or judge:MODEL (none: the mean of each prompt's "
                         "ratings)")
    expected_reward_k: int = setting(8, help="answers sampled per prompt for the user_end target (with a rater)")
    expected_reward_max_train: int | None = setting(None, help="training prompts of the user_end probe "
                                                    "(default all)")
    max_new_tokens: int = setting(64, help="length cap of the sampled answers")
    sample_batch_size: int = setting(64, help="sequences per sampling batch")
    planted_plants: int = setting(5, help="planted-signal power of the best answer-position cell: random "
                                  "directions per strength (0: off); see rsearch.analysis.planted_power")
    seed: int = setting(0)
    out: str = setting("runs/train-probe", runtime=True, help="output directory")
    save: str = setting("", runtime=True, metavar="FILE", help="also write the chosen (best) probe to this file "
                        "(.pt or .safetensors), e.g. layer24.pt")

    def __post_init__(self) -> None:
        check(0 < self.val_fraction < 0.5, f"val_fraction: must be in (0, 0.5), got {self.val_fraction}")
        check(self.cv_folds == 0 or self.cv_folds >= 3, f"cv_folds: 0 (off) or at least 3, got {self.cv_folds}")
        check(self.hook_kind in ("resid_pre", "resid_post"), f"hook_kind: unknown {self.hook_kind!r}")
        check(self.store_dtype in ("float32", "float16"), "store_dtype: use float32 or float16")
        check(self.extract_batch_size >= 1, "extract_batch_size: must be at least 1")
        check(self.max_tokens >= 4, "max_tokens: must be at least 4")
        check_positive(batch_size=self.batch_size, max_train=self.max_train, max_test=self.max_test,
                       max_epochs=self.max_epochs)
        check_device(self.device)
        check(bool(self.positions), "positions: give at least one position for a sweep")
        check(not self.save or Path(self.save).suffix in (".pt", ".pth", ".safetensors"),
              f"--save {self.save!r}: a probe file ends in .pt or .safetensors")
        for p in self.positions + (self.position,):
            parse_position(p)
        if self.hook:
            parse_hook(self.hook)
        check(self.expected_reward_k >= 2, "expected_reward_k: need at least 2 answers per prompt (split-half)")
        check(self.expected_reward_max_train is None or self.expected_reward_max_train >= 10,
              "expected_reward_max_train: need at least 10 prompts")
        check(self.planted_plants >= 0, f"planted_plants: 0 (off) or more, got {self.planted_plants}")
        check(self.max_new_tokens >= 1 and self.sample_batch_size >= 1,
              "max_new_tokens/sample_batch_size: must be at least 1")
        check_spec(self.rater)


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
    embedding: bool = False                              # layer 0 resid_pre: the token embeddings
    vs_baselines: dict[str, Any] = field(default_factory=dict)  # baseline → accuracy, difference, McNemar p
    cv: dict[str, Any] = field(default_factory=dict)     # cross-validated score: cv, cv_lo, cv_hi, k, n
    selected_share: float | None = None                  # share of prompt resamples this cell wins (its family)
    note: str | None = None                              # why a number is missing (a constant input or target)


@dataclass(frozen=True)
class TrainProbeResult:
    rows: tuple[ProbeRow, ...]
    best: ProbeRow
    out_dir: Path
    n_pairs: dict[str, int]
    baselines: dict[str, Any]


def encode_pairs(tokenizer, pairs: Sequence[FeedbackPair], max_tokens: int, too_long: str = "drop"
                 ) -> tuple[list, list[FeedbackPair]]:
    """Two rows per kept pair (chosen, rejected); a pair with a row over max_tokens is dropped or has its
    prompt truncated from the left (`too_long`), and the count is logged."""
    rows, kept, cut = [], [], 0
    for p in pairs:
        chosen = encode_conversation(tokenizer, list(p.prompt), p.chosen)
        rejected = encode_conversation(tokenizer, list(p.prompt), p.rejected)
        fitted = [fit_length(r, max_tokens, too_long) for r in (chosen, rejected)]
        if None not in fitted:
            rows += fitted
            kept.append(p)
            cut += fitted[0] is not chosen or fitted[1] is not rejected
    if kept and (len(kept) < len(pairs) or cut):  # none kept: the caller's error says so
        logging.getLogger("rsearch.train_probe").warning(
            f"{len(pairs) - len(kept)} of {len(pairs)} pairs longer than {max_tokens} tokens dropped, "
            f"{cut} truncated from the left of the prompt (--too-long {too_long})")
    return rows, kept


def fit_config_of(cfg: TrainProbeConfig, objective: str, **differ: Any) -> FitConfig:
    """How train-probe fits a probe for `objective` under `cfg`: the one way to refit a probe like a sweep's.
    `differ`: FitConfig fields a caller sets otherwise, on purpose."""
    return FitConfig(**{"objective": objective, "fitter": cfg.fitter, "lr": cfg.lr, "batch_size": cfg.batch_size,
                        "weight_decay": cfg.weight_decay, "max_epochs": cfg.max_epochs, "patience": cfg.patience,
                        "seed": cfg.seed, **differ})


def probe_data(x: torch.Tensor, pairs: Sequence[FeedbackPair], rows: Sequence, objective: str):
    """ProbeData for rows laid out as (chosen, rejected) per pair."""
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


def _config_and_tokenizer(cfg: TrainProbeConfig, model_name: str, models: ModelCache | None):
    """The model's config and tokenizer, without its weights (the demo's cache gives its loaded ones)."""
    if models is not None:
        model, tokenizer = models.get(model_name, cfg.revision)
        return model.config, tokenizer
    path = resolve_model_path(model_name)
    try:
        kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        return load_config(path, **kwargs), load_tokenizer(path, **kwargs)
    except (OSError, ValueError) as e:
        raise RsearchError(f"cannot load model {model_name!r}: {one_line(e)}") from None


def train_probes(cfg: TrainProbeConfig, models: ModelCache | None = None) -> TrainProbeResult:
    """Runs the job; see the module docstring. Writes probes, metrics.csv/json and (sweeps) a heatmap.

    Args:
        models: loaded models to reuse (the demo's); the job loads its own when None.
    """
    subjects = resolve_subjects(pre=cfg.pre, post=cfg.model, dataset=cfg.dataset, rater=cfg.rater,
                                organism_size=cfg.organism_size, seed=cfg.seed, need_pre=not cfg.model)
    model_name, dataset = subjects.post, subjects.dataset
    out = Path(cfg.out)
    splits = load_splits(dataset, cfg.train_split, cfg.test_split, cfg.val_fraction, seed=cfg.seed,
                         max_train=cfg.max_train, max_test=cfg.max_test)  # bad data fails before a model loads
    # the model's config and tokenizer refuse what they can before its weights load
    model_config, tokenizer = _config_and_tokenizer(cfg, model_name, models)
    n_config = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", None)
    wanted = ([HookPoint(L, cfg.hook_kind) for L in cfg.layers] if cfg.sweep
              else [parse_hook(cfg.hook)] if cfg.hook else [])
    for h in wanted:
        if n_config and not 0 <= h.layer < n_config:
            raise RsearchError(f"hook point {h.name} does not exist: the model has layers 0..{n_config - 1}")
    max_tokens = min(cfg.max_tokens, context_length(model_config) or cfg.max_tokens)  # never past the context
    encoded = {name: encode_pairs(tokenizer, pairs, max_tokens, cfg.too_long) for name, pairs in splits.items()}
    for name, (_, kept) in encoded.items():
        if not kept:
            raise RsearchError(f"every {name} pair is longer than {max_tokens} tokens (max_tokens or the model's "
                               "context); try --too-long truncate")
    if models is None:
        model, tokenizer = load_model(model_name, cfg.dtype, cfg.device, cfg.revision, cfg.trust_remote_code)
    else:
        model, tokenizer = models.get(model_name, cfg.revision)
    n = n_layers(model)
    if cfg.sweep:
        layers = cfg.layers or tuple(range(n))
        hooks = [HookPoint(L, cfg.hook_kind) for L in layers]
        positions = [parse_position(p) for p in cfg.positions]
    else:
        hooks = [parse_hook(cfg.hook or HookPoint(n // 2, "resid_pre"))]
        positions = [parse_position(cfg.position)]
    for h in hooks:
        if not 0 <= h.layer < n:
            raise RsearchError(f"hook point {h.name} does not exist: the model has layers 0..{n - 1}")

    all_rows = [r for name in ("train", "val", "test") for r in encoded[name][0]]
    offsets, start = {}, 0
    for name in ("train", "val", "test"):
        offsets[name] = range(start, start + len(encoded[name][0]))
        start += len(encoded[name][0])

    store_root = Path(cfg.store_dir) if cfg.store_dir else default_store_root()
    with _sharded_capture(cfg, model_name, all_rows, hooks, positions, tokenizer.pad_token_id) as capture:
        store = build_store(model, all_rows, hooks, positions, root=store_root,
                            model_key=model_fingerprint(model, model_name), pad_id=tokenizer.pad_token_id,
                            batch_size=cfg.extract_batch_size, dtype=cfg.store_dtype, progress=show_progress(),
                            capture_batches=capture)

    rater = load_rater(subjects.rater, device=cfg.device) if subjects.rater else None
    known = pair_truth(encoded["test"][1], rater)
    baselines: dict[str, Any] = {}
    pair_margins_of: dict[str, Any] = {}
    if any(p.spec not in PROMPT_ONLY for p in positions):
        pair_margins_of, baselines["pairs"] = _pair_baselines(cfg, encoded, known, model, tokenizer, subjects.pre,
                                                              models)
    prompts = prompt_bow = None
    if any(p.spec in PROMPT_ONLY for p in positions):
        prompts, baselines["user_end"], prompt_bow = _prompt_targets(cfg, encoded, offsets, model, tokenizer, rater)
    del model

    table: list[ProbeRow] = []
    families: dict[str, tuple] = {}  # objective → (groups, target, {cell: out-of-fold values}) for selection
    for hook in hooks:
        for position in positions:
            prompt_only = position.spec in PROMPT_ONLY
            objective = "regression" if prompt_only else cfg.objective
            fit_cfg = fit_config_of(cfg, objective)
            if prompt_only:  # one row per prompt, its expected reward as the target
                data = {name: prompts[name].data(store.tensor(hook, position, prompts[name].rows))
                        for name in offsets}
            else:
                data = {name: probe_data(store.tensor(hook, position, list(offsets[name])), encoded[name][1],
                                         encoded[name][0], objective) for name in offsets}
            note = missing_note(data["train"], objective)
            t0 = time.perf_counter()
            probe, _history = fit_probe(cfg.probe_kind, data["train"], data["val"], fit_cfg)
            seconds = time.perf_counter() - t0
            cv = {}
            if cfg.cv_folds:
                pooled, groups, target = _pooled(data, encoded, prompts, objective, prompt_only)
                oof = out_of_fold(cfg.probe_kind, pooled, groups, fit_cfg, cfg.cv_folds, cfg.seed)
                cv = cv_summary(oof, target, groups, cfg.cv_folds, cfg.seed)
                families.setdefault(objective, (groups, target, {}))[2][(hook.name, position.spec)] = oof
            controls = with_controls(cfg.probe_kind, data["train"], data["val"], data["test"], fit_cfg, probe=probe)
            val_metrics = evaluate(probe, data["val"], objective)
            test_metrics = dict(controls["probe"])
            if prompt_only:
                vs = _prompt_cell(probe, data["test"], prompts["test"], prompt_bow, baselines["user_end"],
                                  test_metrics, cfg.seed)
            else:
                vs = _pair_cell(probe, data["test"], pair_margins_of, known, test_metrics, cfg.seed)
            path = out / "probes" / f"layer{hook.layer:02d}.{hook.kind}.{_safe(position.spec)}.safetensors"
            save_probe(path, probe, {
                "model": model_name, "revision": cfg.revision, "hook": hook.name, "position": position.spec,
                "objective": objective, "dataset": dataset, "train_split": cfg.train_split,
                "metrics": {"val": val_metrics, "test": test_metrics},
                "fitter": cfg.fitter,
                "target": baselines["user_end"]["target"] if prompt_only else "the rater's preference (pairs)",
            })
            table.append(ProbeRow(hook.name, hook.layer, position.spec, objective, val_metrics, test_metrics,
                                  controls["length"], controls["shuffled"], seconds, str(path),
                                  embedding=hook.layer == 0 and hook.kind == "resid_pre", vs_baselines=vs, cv=cv, note=note))

    table = with_selection_shares(table, families, cfg.seed)
    best = choose_best(table, cfg.objective)
    if cfg.planted_plants and best.objective != "regression" and best.position not in PROMPT_ONLY:
        baselines["planted"] = _planted(cfg, best, store, encoded, offsets, pair_margins_of)
    best_path = out / "best_probe.safetensors"
    with atomic_path(best_path) as tmp:
        tmp.write_bytes(Path(best.path).read_bytes())
    if cfg.save:  # the same probe and metadata in the format the name asks for (save_probe writes atomically)
        save_probe(cfg.save, *load_probe(best.path))
    n_pairs = {k: len(v[1]) for k, v in encoded.items()}
    write_metrics(out, table, best, cfg, n_pairs, baselines)
    if cfg.sweep:
        write_heatmap(out / "heatmap.png", table)
    return TrainProbeResult(tuple(table), best, out, n_pairs, baselines)


def missing_note(data: ProbeData, objective: str) -> str | None:
    """A one-line reason the cell's correlations are undefined, read off its training data, or None."""
    x = data.x.float()
    if x.shape[0] > 1 and float((x - x[0]).abs().max()) == 0:
        return "constant input: every row has the same activation (e.g. one fixed token at layer 0), so r is undefined"
    if objective == "regression" and data.y.numel() > 1 and float(data.y.std()) == 0:
        return "constant target: every row has the same value, so r is undefined"
    return None


def _score(row: ProbeRow) -> float:
    """What picks the best cell: its cross-validated score where one was computed, else its validation metric."""
    if row.cv:
        return row.cv["cv"] if row.cv["cv"] == row.cv["cv"] else float("-inf")
    return _selection_metric(row.val, row.objective)


def _eligible(table: Sequence[ProbeRow], objective: str) -> list[ProbeRow]:
    """The cells a best probe is chosen from: those fitted with `objective`, leaving out the token embeddings
    (layer 0 resid_pre) unless nothing else was fitted."""
    pool = [r for r in table if r.objective == objective] or list(table)
    return [r for r in pool if not r.embedding] or pool


def choose_best(table: Sequence[ProbeRow], objective: str) -> ProbeRow:
    """The best probe by cross-validation (or validation) among the eligible cells."""
    return max(_eligible(table, objective), key=_score)


def with_selection_shares(table: list[ProbeRow], families: dict[str, tuple], seed: int) -> list[ProbeRow]:
    """The rows with `selected_share`: within each objective's eligible cells, how often each wins when the prompts
    are resampled (`selection_frequency`); unchanged without cross-validation."""
    shares: dict[tuple[str, str], float] = {}
    for objective, (groups, target, oofs) in families.items():
        keep = {(r.hook, r.position) for r in _eligible([r for r in table if r.objective == objective], objective)}
        shares.update(selection_frequency({c: v for c, v in oofs.items() if c in keep}, target, groups, seed))
    return [dataclasses.replace(r, selected_share=shares.get((r.hook, r.position))) for r in table]


def _pooled(data: dict[str, ProbeData], encoded, prompts, objective: str, prompt_only: bool):
    """Train + validation as one ProbeData, each CV unit's prompt (a pair's, a row's or, at user_end, the prompt
    itself), and the regression target (None for pairwise accuracy)."""
    tr, va = data["train"], data["val"]
    n_tr = tr.n
    pairs = None if tr.pairs is None else torch.cat([tr.pairs, va.pairs + n_tr])
    pooled = ProbeData(x=torch.cat([tr.x, va.x]), y=torch.cat([tr.y, va.y]), pairs=pairs,
                       lengths=None if tr.lengths is None else torch.cat([tr.lengths, va.lengths]))
    if prompt_only:
        groups = [encoded[n][1][i].prompt_id for n in ("train", "val") for i in prompts[n].pairs]
    else:
        per_pair = [p.prompt_id for n in ("train", "val") for p in encoded[n][1]]
        groups = per_pair if objective != "regression" else [g for g in per_pair for _ in range(2)]
    target = None if objective != "regression" else pooled.y.double().numpy()
    return pooled, groups, target


def _planted(cfg: TrainProbeConfig, best: ProbeRow, store, encoded, offsets, margins_of: dict[str, Any]
             ) -> dict[str, Any] | None:
    """Planted-signal power of the best cell against its strongest text baseline (None without one): the true
    reward planted where every pair carries it, else the label."""
    text = strongest_text(best.vs_baselines)
    if text is None:
        return None
    hook, position = parse_hook(best.hook), parse_position(best.position)
    data = {name: probe_data(store.tensor(hook, position, list(offsets[name])), encoded[name][1], encoded[name][0],
                             best.objective) for name in offsets}
    pairs = [p for name in offsets for p in encoded[name][1]]
    truth = all(p.get("true_score_chosen") is not None and p.get("true_score_rejected") is not None for p in pairs)
    signal = {name: (torch.tensor([float(p.get(k)) for p in encoded[name][1]
                                   for k in ("true_score_chosen", "true_score_rejected")]) if truth
                     else torch.tensor([1.0, 0.0] * len(encoded[name][1]))) for name in offsets}
    power = planted_power(cfg.probe_kind, data, signal, margins_of[text[0]], fit_config_of(cfg, best.objective),
                          PlantedPowerConfig(n_plants=cfg.planted_plants, seed=cfg.seed))
    return {**power, "hook": best.hook, "position": best.position, "text_baseline": text[0],
            "signal": "true reward" if truth else "label"}


# ----- baselines of the pairs (completion positions) -----

def _pair_baselines(cfg: TrainProbeConfig, encoded, known, model, tokenizer, pre_name: str,
                    models: ModelCache | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baselines' margins on the test pairs ({name: [m]}) and their summary: accuracies (label, truth,
    minimal pairs), what each is, and what is known about the pairs."""
    t0 = time.perf_counter()
    (train_rows, train_kept), (test_rows, test_kept) = encoded["train"], encoded["test"]
    train_pairs = torch.arange(2 * len(train_kept)).view(-1, 2)
    test_pairs = torch.arange(2 * len(test_kept)).view(-1, 2)
    scores, text_l2 = text_baseline_scores(train_rows, train_pairs, test_rows, cfg.seed)
    pre = None
    if pre_name:
        pre = (models.get(pre_name)[0] if models is not None
               else load_model(pre_name, cfg.dtype, cfg.device, None, cfg.trust_remote_code)[0])
    scores.update(logprob_scores(model, test_rows, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                                 pre=pre, batch_size=cfg.extract_batch_size, progress=show_progress()))
    margins = {name: pair_margins(s, test_pairs) for name, s in scores.items()}
    summary = {"n": len(test_kept), "truth_known": known.truth is not None,
               "minimal_known": known.minimal is not None, "labels": {k: LABELS[k] for k in margins},
               "scores": {k: accuracies(m, known) for k, m in margins.items()}, "text_l2": text_l2,
               "seconds": round(time.perf_counter() - t0, 2)}
    return margins, summary


def _pair_cell(probe, test, margins_of: dict[str, Any], known, metrics: dict, seed: int) -> dict[str, Any]:
    """Adds the probe's accuracy against the truth and on minimal pairs to `metrics`; returns its comparison with
    each baseline on the same test pairs."""
    margins = pair_margins(predict(probe, test.x), test.pairs)
    acc = accuracies(margins, known)
    metrics.update({k: acc[k] for k in ("truth_acc", "truth_n", "minimal_acc", "minimal_n", "minimal_truth_acc")})
    return against_baselines(margins, margins_of, known, seed)


# ----- the user_end target: the expected reward of each prompt -----

@dataclass(frozen=True)
class PromptRows:
    """One split's prompts for the user_end probe: a row of the activation store for each, its target."""

    rows: list[int]             # store row of the prompt's first pair's chosen row
    target: list[float]         # the expected reward
    lengths: list[int]          # prompt length in tokens (the length control reads it)
    tasks: list[Any]            # the data's task of each prompt (None where unknown)
    values: list[list[float]]   # what the target averages (sampled answers' rewards, or ratings)
    encoded: list               # the Encoded row of each prompt
    pairs: list[int]            # index of the prompt's first pair in the split

    def data(self, x: torch.Tensor):
        return ProbeData(x=x, y=torch.tensor(self.target, dtype=torch.float32),
                         lengths=torch.tensor(self.lengths, dtype=torch.float32))


def _prompt_targets(cfg: TrainProbeConfig, encoded, offsets, model, tokenizer, rater
                    ) -> tuple[dict[str, PromptRows], dict[str, Any], Any]:
    """Each split's prompts with their expected reward; the target's summary on test (what it is, its split-half
    reliability, the prompt bag-of-words and task-mean baselines); the bag of words' `[n_test]` predictions."""
    t0 = time.perf_counter()
    out: dict[str, PromptRows] = {}
    for j, name in enumerate(("train", "val", "test")):
        rows, kept = encoded[name]
        first: dict[str, int] = {}
        for i, p in enumerate(kept):
            first.setdefault(p.prompt_id, i)
        chosen = list(first.values())
        if name == "train" and cfg.expected_reward_max_train and len(chosen) > cfg.expected_reward_max_train:
            chosen = chosen[: cfg.expected_reward_max_train]
        if rater is not None:
            values = er.sampled_rewards(model, tokenizer, [kept[i].prompt for i in chosen], rater,
                                        cfg.expected_reward_k, seed=cfg.seed * 7 + j,
                                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size,
                                        progress=show_progress())
        else:
            ratings = er.prompt_ratings(kept)
            values = [ratings[kept[i].prompt_id] for i in chosen]
        out[name] = PromptRows(rows=[offsets[name][2 * i] for i in chosen], target=[sum(v) / len(v) for v in values],
                               lengths=[rows[2 * i].user_end + 1 for i in chosen],
                               tasks=[kept[i].get("task") for i in chosen], values=values,
                               encoded=[rows[2 * i] for i in chosen], pairs=chosen)
    write_text(Path(cfg.out) / "user_end_targets.jsonl", "".join(
        json.dumps({"split": name, "prompt_id": encoded[name][1][i].prompt_id, "values": v, "target": t}) + "\n"
        for name, pr in out.items() for i, v, t in zip(pr.pairs, pr.values, pr.target)))
    train, test = out["train"], out["test"]
    bow = er.prompt_text_baseline(train.encoded, train.target, test.encoded, cfg.seed)
    has_tasks = all(t is not None for t in train.tasks + test.tasks)
    summary: dict[str, Any] = {
        "target": (f"mean true reward of {cfg.expected_reward_k} answers sampled from the model read "
                   f"(rater {rater.name})" if rater is not None else "mean of the prompt's ratings in the data"),
        "k": cfg.expected_reward_k if rater is not None else None,
        "n_prompts": {k: len(v.rows) for k, v in out.items()},
        "reliability": er.split_half_reliability(test.values, seed=cfg.seed),
        "prompt_bow": er.r_with_ci(bow, test.target, seed=cfg.seed),
        "task_mean": (er.r_with_ci(er.group_mean_prediction(train.tasks, train.target, test.tasks), test.target,
                                   seed=cfg.seed) if has_tasks else None),
        "within_task_prompt_bow": er.within_group_r(bow, test.target, test.tasks) if has_tasks else None,
        "test_target_sd": float(torch.tensor(test.target, dtype=torch.float64).std()),
    }
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return out, summary, bow


def _prompt_cell(probe, test, prompts: PromptRows, bow, summary: dict[str, Any], metrics: dict, seed: int
                 ) -> dict[str, Any]:
    """Adds the probe's r with the target (bootstrap CI over prompts) and its r within task to `metrics`;
    returns its comparison with the prompt bag-of-words baseline (r difference with a paired bootstrap CI)."""
    pred = predict(probe, test.x).double().numpy()
    got = er.r_with_ci(pred, prompts.target, seed=seed)
    metrics.update({"r": got["r"], "r_lo": got["r_lo"], "r_hi": got["r_hi"],
                    "within_task_r": (er.within_group_r(pred, prompts.target, prompts.tasks)
                                      if summary["task_mean"] is not None else None)})
    diff = er.r_difference(pred, bow, prompts.target, seed=seed)
    return {"prompt_bow": {"r": summary["prompt_bow"]["r"], "diff": diff["diff"], "diff_lo": diff["lo"],
                           "diff_hi": diff["hi"]}}


@contextlib.contextmanager
def _sharded_capture(cfg: TrainProbeConfig, model_name: str, rows, hooks, positions, pad_id: int):
    """The extraction's batches captured on Ray workers when asked for (`--workers`, `--ray-address`): a
    `capture_batches` for `build_store`, or None (in this process)."""
    check(cfg.workers >= 0, f"workers: must be ≥ 0, got {cfg.workers}")
    if not (cfg.workers or cfg.ray_address):
        yield None
        return
    threads = 1 if resolve_device(cfg.device) == "cpu" else None
    with ShardPool(max(1, cfg.workers), cfg.ray_address or None, dtype=cfg.dtype, device=cfg.device,
                   threads=threads) as pool:
        yield sharded_capture(pool, model_name, cfg.revision, rows, hooks, positions, pad_id)


def _safe(spec: str) -> str:
    return spec.replace(":", "").replace("-", "m").replace(".", "p")


CSV_COLUMNS = ("hook", "layer", "position", "objective", "embedding", "test_pairwise_acc", "test_pairwise_acc_lo",
               "test_pairwise_acc_hi", "test_truth_acc", "test_minimal_acc", "test_minimal_truth_acc", "test_pearson",
               "test_spearman", "test_auroc", "test_r", "test_r_lo", "test_r_hi", "test_within_task_r",
               "val_pairwise_acc", "val_pearson", "cv", "cv_lo", "cv_hi", "selected_share", "note", "text_baseline", "text_acc", "probe_minus_text", "p_vs_text",
               "dpo_acc", "p_vs_dpo", "logprob_acc", "p_vs_logprob", "prompt_bow_r", "r_minus_prompt_bow",
               "r_minus_prompt_bow_lo", "r_minus_prompt_bow_hi", "length_pairwise_acc", "length_pearson",
               "shuffled_pairwise_acc", "shuffled_pearson", "seconds", "path")


def _flat(row: ProbeRow) -> dict[str, Any]:
    vs = row.vs_baselines
    text = strongest_text(vs)
    bow = vs.get("prompt_bow", {})
    return {
        "hook": row.hook, "layer": row.layer, "position": row.position, "objective": row.objective,
        "embedding": row.embedding,
        **{f"test_{k}": row.test.get(k) for k in ("pairwise_acc", "pairwise_acc_lo", "pairwise_acc_hi", "truth_acc",
                                                  "minimal_acc", "minimal_truth_acc", "pearson", "spearman", "auroc",
                                                  "r", "r_lo", "r_hi", "within_task_r")},
        "val_pairwise_acc": row.val.get("pairwise_acc"), "val_pearson": row.val.get("pearson"),
        "cv": row.cv.get("cv"), "cv_lo": row.cv.get("cv_lo"), "cv_hi": row.cv.get("cv_hi"),
        "selected_share": row.selected_share, "note": row.note,
        "text_baseline": text[0] if text else None, "text_acc": text[1]["acc"] if text else None,
        "probe_minus_text": text[1]["diff"] if text else None, "p_vs_text": text[1]["p"] if text else None,
        "dpo_acc": vs.get("dpo_reward", {}).get("acc"), "p_vs_dpo": vs.get("dpo_reward", {}).get("p"),
        "logprob_acc": vs.get("logprob_post", {}).get("acc"), "p_vs_logprob": vs.get("logprob_post", {}).get("p"),
        "prompt_bow_r": bow.get("r"), "r_minus_prompt_bow": bow.get("diff"),
        "r_minus_prompt_bow_lo": bow.get("diff_lo"), "r_minus_prompt_bow_hi": bow.get("diff_hi"),
        "length_pairwise_acc": row.length_control.get("pairwise_acc"),
        "length_pearson": row.length_control.get("pearson"),
        "shuffled_pairwise_acc": row.shuffled_control.get("pairwise_acc"),
        "shuffled_pearson": row.shuffled_control.get("pearson"),
        "seconds": round(row.seconds, 4), "path": row.path,
    }


def write_metrics(out: Path, table: Sequence[ProbeRow], best: ProbeRow, cfg: TrainProbeConfig,
                  n_pairs: dict[str, int], baselines: dict[str, Any]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in table:
        writer.writerow(_flat(row))
    write_text(out / "metrics.csv", buf.getvalue())
    SweepResult(config=cfg.to_dict(), n_pairs=n_pairs, best=_flat(best),
                best_probe=str(out / "best_probe.safetensors"),
                rows=[{**_flat(r), "val": r.val, "test": r.test, "length_control": r.length_control,
                       "shuffled_control": r.shuffled_control, "vs_baselines": r.vs_baselines} for r in table],
                baselines=baselines).save(out)


def write_heatmap(path: Path, table: Sequence[ProbeRow]) -> None:
    """Layer × position → held-out pairwise accuracy; the probe's accuracy minus the stronger bag-of-words
    baseline's on the same pairs; Pearson r with the rating (at user_end: with the expected reward). Layer 0
    resid_pre (the token embeddings) is marked with *."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({r.layer for r in table})
    positions = list(dict.fromkeys(r.position for r in table))
    flat = {(r.layer, r.position): (_flat(r), r.embedding) for r in table}
    panels = (("test_pairwise_acc", "held-out pairwise accuracy", "viridis"),
              ("probe_minus_text", "probe − bag of words (accuracy)", "RdBu"),
              ("test_pearson", "held-out Pearson r (user_end: expected reward)", "viridis"))
    fig, axes = plt.subplots(3, 1, figsize=(2.6 + 1.1 * len(positions), 3 * (1.6 + 0.35 * len(layers))))
    for ax, (key, title, cmap) in zip(axes, panels):
        grid = np.full((len(layers), len(positions)), np.nan)
        for (L, pos), (f, _) in flat.items():
            if f.get(key) is not None:
                grid[layers.index(L), positions.index(pos)] = f[key]
        bound = np.nanmax(np.abs(grid)) if key == "probe_minus_text" and np.isfinite(grid).any() else None
        im = ax.imshow(grid, aspect="auto", cmap=cmap, origin="lower",
                       **({"vmin": -bound, "vmax": bound} if bound else {}))
        ax.set_xticks(range(len(positions)), positions, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(L) for L in layers], fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=10)
        for (L, pos), (_, emb) in flat.items():
            i, j = layers.index(L), positions.index(pos)
            if not np.isnan(grid[i, j]):
                text = f"{grid[i, j]:+.2f}" if key == "probe_minus_text" else f"{grid[i, j]:.2f}"
                ax.text(j, i, text + ("*" if emb else ""), ha="center", va="center", fontsize=7,
                        color="black" if key == "probe_minus_text" else "white")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if any(e for _, e in flat.values()):
        fig.text(0.01, 0.01, "* layer 0 resid_pre: the token embeddings (a bag of words itself)", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def add_arguments(parser) -> None:
    add_config_arguments(parser, TrainProbeConfig, config_file="YAML file (top-level keys, or a `train_probe:` "
                         "section), or a shipped recipe by name (zephyr)")


def main(args) -> int:
    cfg = config_from_args(args, TrainProbeConfig, "train_probe")
    with output_dir(cfg.out):
        result = train_probes(cfg)
    b = result.best
    nan = float("nan")
    num = lambda v: nan if v is None else v  # noqa: E731
    print(f"pairs: train {result.n_pairs['train']}, val {result.n_pairs['val']}, test {result.n_pairs['test']}")
    print(f"{'hook':<28}{'position':<22}{'objective':<12}{'test acc | r [95% CI]':<24}{'pearson':>8}"
          f"{'bow acc':>9}{'p vs bow':>10}{'len acc':>9}{'shuf acc':>9}")
    for r in result.rows:
        f = _flat(r)
        where = f"{r.hook:<28}{r.position + (' (emb.)' if r.embedding else ''):<22}{r.objective:<12}"
        if r.objective == "regression" and f["test_r"] is None:
            print(where + (r.note or "r undefined"))
            continue
        metric = ("r " if r.objective == "regression" else "") + (
            f"{num(f['test_r']):.3f} [{num(f['test_r_lo']):.3f}, {num(f['test_r_hi']):.3f}]"
            if r.objective == "regression" else
            f"{num(f['test_pairwise_acc']):.3f} [{num(f['test_pairwise_acc_lo']):.3f}, "
            f"{num(f['test_pairwise_acc_hi']):.3f}]")
        rest = (f"{num(f['test_pearson']):>8.3f}{num(f['text_acc']):>9.3f}{num(f['p_vs_text']):>10.2g}"
                f"{num(f['length_pairwise_acc']):>9.3f}{num(f['shuffled_pairwise_acc']):>9.3f}"
                if r.objective != "regression" else
                f"{num(f['test_pearson']):>8.3f}   prompt bag of words r {num(f['prompt_bow_r']):.3f}")
        print(where + f"{metric:<24}" + rest + (f"  ({r.note})" if r.note else ""))
    ue = result.baselines.get("user_end")
    if ue:
        rel = ue["reliability"]
        print(f"user_end target: {ue['target']}; split-half reliability {num(rel['reliability']):.3f} (ceiling on r "
              f"{num(rel['ceiling']):.3f}); prompt bag of words r {num(ue['prompt_bow']['r']):.3f}")
    if b.cv:
        print(f"best by {b.cv['k']}-fold cross-validation over prompts (train + validation; token embeddings left "
              f"out): {b.hook} @ {b.position}, CV {'r' if b.objective == 'regression' else 'accuracy'} "
              f"{num(b.cv['cv']):.3f} [{num(b.cv['cv_lo']):.3f}, {num(b.cv['cv_hi']):.3f}], chosen in "
              f"{num(b.selected_share):.0%} of prompt resamples → {result.out_dir / 'best_probe.safetensors'}")
    else:
        print(f"best (by validation, token embeddings left out): {b.hook} @ {b.position} → "
              f"{result.out_dir / 'best_probe.safetensors'}")
    planted = result.baselines.get("planted")
    if planted:
        at = planted["curve"][-1]
        print(f"power: a {planted['signal']} direction planted in {planted['hook']} @ {planted['position']} beats "
              f"{planted['text_baseline']} in {at['detected']:.0%} of {planted['n_plants']} plants at share "
              f"{at['share']:.2g} of the chosen − rejected variance; minimal detectable effect "
              + (f"{planted['mde']:.2g}" if planted["mde"] is not None else f"> {planted['max_share']:.2g}"))
    if cfg.save:
        print(f"saved the best probe to {cfg.save}")
    print(f"metrics: {result.out_dir / 'metrics.csv'}")
    return 0
