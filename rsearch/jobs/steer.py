"""`rsearch steer`: does the model use what the probe reads? Steering along the probe direction, and patching.

Steering (rsearch.steering): while the post-RL model (and, if asked, the pre-RL model) samples k completions for
n test prompts, α × the probe's unit direction × the typical activation norm at the probe's hook is added to the
residual stream there — from the end of the user's prompt on, or on completion tokens only — for each α of a
range that includes negative values and 0. Two nulls get the same norms: `n_random` random directions, and the
direction of a probe fitted like this one on shuffled labels. Every condition samples with the same seeds, so the
conditions differ only in the added vector (α = 0 gives exactly the unsteered samples). Each completion gets:

- its reward by the rater (the organism's known rater, or any `rsearch.raters` spec), and for the organism the
  reward's parts (correct, well_formed, polite, rude, and style points where the rater reports them);
- the probe's score of the completion, read through the unsteered post-RL model;
- fluency: its mean token log-prob under the unsteered model that wrote it; and its length in tokens.

rsearch.analysis.causal turns the table into dose–response curves with bootstrap CIs over prompts and per-prompt
slopes over α, the probe direction's set against each null.

Patching (rsearch.patching): on `patch_pairs` test feedback pairs, per layer and position, the post-RL model's
residual stream patched into the pre-RL model's run (and the reverse), and the change of the DPO implicit reward
margin of chosen over rejected, against patching another pair's activation.

Outputs under `--out`: steer.json (every summary), completions.jsonl (one row per completion), steering.png and
patching.png, each written atomically.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rsearch.chat import encode_conversation
from rsearch.config import Config, add_config_arguments, check, check_device, config_from_args, setting
from rsearch.errors import RsearchError
from rsearch.io_utils import output_dir, write_text
from rsearch.lm import ModelCache, sample_completions, sequence_logprobs
from rsearch.log import show_progress
from rsearch.positions import parse_position
from rsearch.prompts import load_prompts, user_text
from rsearch.raters import check_spec as check_rater
from rsearch.raters import load_rater
from rsearch.results import SteerResult
from rsearch.steering import (POSITIONS_FROM, plain_decoding, random_directions, steer, steering_vector,
                               typical_norm, typical_spread, unit)
from rsearch.subjects import Subjects, resolve_subjects
from rsearch.data import load_records, pairs_from_records
from rsearch.activations import extract
from rsearch.jobs.train_probe import PROMPT_ONLY, TrainProbeConfig, encode_pairs, fit_config_of, probe_data
from rsearch.probes import fit_probe, load_probe, shuffled_labels
from rsearch.organism import rater as organism_rater
from rsearch.analysis.causal import dose_response, patching_summary
from rsearch.jobs.steer_figures import plot_patching, plot_steering
from rsearch.scorer import ProbeScorer
from rsearch.hooks import n_layers, parse_hook
from rsearch.patching import margin_patching

log = logging.getLogger("rsearch.steer")

METRICS = ("true_reward", "probe_score", "fluency", "length")
ALPHA_UNITS = ("spread", "norm")
COMPONENTS = ("correct", "well_formed", "polite", "rude", "style_points")


@dataclass(frozen=True)
class SteerConfig(Config):
    """Settings of `rsearch steer`; each field's help is its flag's."""

    pre: str = setting("", help="pre-RL model (default: the organism's SFT model)")
    post: str = setting("", help="post-RL model (default: the organism's DPO model)")
    probe: str = setting("", help="probe file whose direction is steered along (its hook is where)")
    dataset: str = setting("", help="feedback dataset (default: the organism's data)")
    prompts: str = setting("test_prefs", help="split the prompts and the patching pairs come from")
    train_split: str = setting("train_prefs", help="split the shuffled-label probe is fitted on and the "
                               "activation norm is measured on")
    n: int = setting(24, short="-n", help="prompts (a seeded sample)")
    k: int = setting(2, short="-k", help="completions per prompt and condition")
    alphas: tuple[float, ...] = setting((-4.0, -2.0, 0.0, 2.0, 4.0),
                                        help="steering strengths, in units of --alpha-unit")
    alpha_unit: str = setting("spread", choices=ALPHA_UNITS,
                              help="α's unit: spread, the SD of the residual stream along the probe's direction "
                                   "(tokens from user_end on, train conversations); norm, its mean L2 norm (on "
                                   "SmolLM2-135M, ±0.5 × the norm of 186 wrecked every direction)")
    models: tuple[str, ...] = setting(("post",), help="models to steer: post, pre or both (comma-separated)")
    positions_from: str = setting("user_end", choices=POSITIONS_FROM,
                                  help="steer from the end of the user's prompt on, or only completion tokens")
    n_random: int = setting(3, help="random directions (the first null)")
    fit_pairs: int = setting(1000, help="train pairs the shuffled-label probe (the second null) is fitted on")
    norm_rows: int = setting(256, help="train conversations α's unit (spread or norm) is measured on")
    max_new_tokens: int = setting(48)
    temperature: float = setting(1.0)
    sample_batch_size: int = setting(256, help="sequences per sampling batch (the sampling seeds depend on it)")
    batch_size: int = setting(64, help="rows per teacher-forced forward")
    patch_pairs: int = setting(48, help="test pairs for activation patching (0 skips patching)")
    patch_positions: tuple[str, ...] = setting(("user_end", "completion_mean"),
                                               help="positions patched (completion_mean: every completion token)")
    patch_layers: tuple[int, ...] = setting((), help="layers patched (default: all)")
    beta: float | None = setting(None, help="DPO beta of the implicit reward (default: the organism's or 0.1)")
    rater: str = setting("auto", help="auto, organism, none, a local reward model directory, "
                         "module.path:callable, or judge:MODEL (see rsearch.raters)")
    n_boot: int = setting(1000, help="bootstrap resamples")
    seed: int = setting(0)
    dtype: str = setting("float32")
    device: str = setting("auto", runtime=True)
    organism_size: str = setting("demo", choices=("tiny", "demo"),
                                 help="the organism used where --pre/--post/--dataset are left out")
    out: str = setting("runs/steer", runtime=True, help="output directory")

    def __post_init__(self) -> None:
        check(self.n >= 2 and self.k >= 1, f"n ≥ 2 prompts and k ≥ 1 completions, got n={self.n}, k={self.k}")
        check(0.0 in self.alphas, "alphas: include 0 (the unsteered run every condition is compared with)")
        check(len(set(self.alphas)) == len(self.alphas),
              f"alphas: give each strength once, got {', '.join(str(a) for a in self.alphas)}")
        check(any(a > 0 for a in self.alphas) or any(a < 0 for a in self.alphas),
              "alphas: give at least one non-zero strength")
        check(bool(self.models) and set(self.models) <= {"post", "pre"}, f"models: use post and/or pre, "
              f"got {','.join(self.models)}")
        check(self.positions_from in POSITIONS_FROM, f"positions_from: use {' or '.join(POSITIONS_FROM)}")
        check(self.n_random >= 1, "n_random: need at least 1 random direction")
        check(self.fit_pairs >= 10 and self.norm_rows >= 1, "fit_pairs ≥ 10 and norm_rows ≥ 1")
        check(self.max_new_tokens >= 1 and self.temperature > 0, "max_new_tokens ≥ 1 and temperature > 0")
        check(self.patch_pairs == 0 or self.patch_pairs >= 2, "patch_pairs: 0 (no patching) or at least 2")
        for p in self.patch_positions:
            parse_position(p)
        check(self.beta is None or self.beta > 0, f"beta: must be positive, got {self.beta}")
        check_rater(self.rater)
        check_device(self.device)
        check(self.n_boot >= 100, "n_boot: use at least 100 bootstrap resamples")


# ----- the directions -----

def load_pairs(dataset: str, split: str, n: int, seed: int):
    """A seeded sample of n feedback pairs of a split."""
    pairs = pairs_from_records(load_records(dataset, split), f"{dataset}:{split}")
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def shuffled_direction(model, tok, probe, meta: dict[str, Any], pairs, seed: int) -> torch.Tensor:
    """`[d_model]` the direction of a probe fitted like `probe` (kind, objective, fast fitter) at its hook and
    position, on `pairs` whose labels are shuffled: a direction of the same provenance that reads no reward."""
    rows, kept = encode_pairs(tok, pairs, 2048)
    hook, position = meta["hook"], parse_position(meta.get("position", "-1")).spec
    x = extract(model, rows, [hook], [position], pad_id=tok.pad_token_id)[(hook, position)]
    objective = meta.get("objective") or "pairwise"
    data = probe_data(x, kept, rows, objective)
    # a probe file keeps no fitting settings: train-probe's defaults, the fast fitter, this run's seed
    fit = fit_config_of(TrainProbeConfig(), objective, fitter="fast", seed=seed)
    fitted, _ = fit_probe(probe.kind, shuffled_labels(data, seed + 17), None, fit)
    return fitted.direction().float().cpu()


def directions(cfg: SteerConfig, probe, shuffled: torch.Tensor) -> list[tuple[str, int, torch.Tensor]]:
    """(kind, index, unit direction) of the probe, the shuffled-label probe and each random direction."""
    d = probe.d_model
    out = [("probe", 0, unit(probe.direction().cpu())), ("shuffled", 0, unit(shuffled))]
    out += [("random", i, r) for i, r in enumerate(random_directions(d, cfg.n_random, cfg.seed + 7))]
    return out


# ----- sampling and scoring -----

def components_of(subjects: Subjects):
    """(prompt, completion) → the organism rater's parts of the reward, or None for another rater."""
    if subjects.rater != "organism":
        return None
    detail = getattr(organism_rater, "rate_detail", None) or organism_rater.features

    def parts(prompt: str, completion: str) -> dict[str, float | None]:
        got = detail(prompt, completion)
        return {c: None if got.get(c) is None else float(got[c]) for c in COMPONENTS if c in got}
    return parts


def sample_conditions(cfg: SteerConfig, model, tok, hook: str, scale: float, dirs, messages) -> list[dict]:
    """One row per completion of every condition: the unsteered run ("none", α = 0) and direction × α ≠ 0."""
    conditions = [("none", 0, None, 0.0)] + [(kind, i, v, a) for kind, i, v in dirs for a in cfg.alphas if a != 0]
    rows = []
    for kind, i, v, alpha in tqdm(conditions, desc="steer", unit="condition", disable=not show_progress(),
                                  leave=False):
        vector = steering_vector(v if v is not None else dirs[0][2], alpha, scale)
        with steer(model, hook, vector, positions_from=cfg.positions_from):
            got = sample_completions(model, tok, messages, cfg.k, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                                     temperature=cfg.temperature, batch_size=cfg.sample_batch_size,
                                     **plain_decoding())
        for p, comps in enumerate(got):
            for s, c in enumerate(comps):
                rows.append({"direction": kind, "direction_index": i, "alpha": alpha, "prompt_index": p, "sample": s,
                             "completion": c.text, "length": c.n_tokens, "ended": c.ended})
    return rows


def score_rows(table: list[dict], messages, reader, model, tok, rater, parts, batch_size: int,
               read_probe: bool = True) -> None:
    """Fills probe_score (read by `reader`, the unsteered post-RL model; None unless `read_probe`: a user_end
    probe reads the prompt, the same in every condition), fluency (mean log-prob under the unsteered `model` that
    wrote it), true_reward and the reward's parts, in place."""
    written = [r for r in table if r["completion"]]
    rows = [encode_conversation(tok, messages[r["prompt_index"]], r["completion"]) for r in written]
    probe = reader.score_rows(rows).probe if rows and read_probe else None
    fluency = sequence_logprobs(model, rows, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, mean=True,
                                batch_size=batch_size) if rows else torch.empty(0)
    for r in table:
        r.update(probe_score=None, fluency=None)
    for j, (r, f) in enumerate(zip(written, fluency.tolist())):
        r["probe_score"], r["fluency"] = None if probe is None else float(probe[j]), f
    if rater is not None:
        rewards = rater.rate([messages[r["prompt_index"]] for r in table], [r["completion"] for r in table])
        for r, v in zip(table, rewards):
            r["true_reward"] = float(v)
    if parts is not None:
        for r in table:
            r.update(parts(user_text(messages[r["prompt_index"]]), r["completion"]))


# ----- the job -----

def run_steer(cfg: SteerConfig, models: ModelCache | None = None) -> SteerResult:
    """Runs steering and patching (see the module docstring) and writes their outputs under `cfg.out`."""
    if not cfg.probe:
        raise RsearchError("no probe given: pass --probe FILE (e.g. runs/probes/best_probe.safetensors)")
    t0 = time.perf_counter()
    probe, meta = load_probe(cfg.probe)
    if "hook" not in meta:
        raise RsearchError(f"{cfg.probe}: the probe's metadata names no hook to steer at")
    subjects = resolve_subjects(pre=cfg.pre, post=cfg.post, dataset=cfg.dataset, rater=cfg.rater, beta=cfg.beta,
                                organism_size=cfg.organism_size, seed=cfg.seed)
    models = models or ModelCache(cfg.dtype, cfg.device)
    loaded = {name: models.get(getattr(subjects, name)) for name in ("pre", "post")}
    post_model, tok = loaded["post"]
    reader = ProbeScorer(probe, post_model, tok, metadata=meta, batch_size=cfg.batch_size)
    hook = reader.hook.name
    out = Path(cfg.out)

    train = load_pairs(subjects.dataset, cfg.train_split, cfg.fit_pairs, cfg.seed)
    shuffled = shuffled_direction(post_model, tok, probe, meta, train, cfg.seed)
    dirs = directions(cfg, probe, shuffled)
    norm_rows = [encode_conversation(tok, list(p.prompt), p.chosen) for p in train[:cfg.norm_rows]]
    prompts = load_prompts(cfg.prompts, subjects.dataset, cfg.n, cfg.seed)
    messages = [m for _, m in prompts]
    rater = load_rater(subjects.rater, device=cfg.device, batch_size=cfg.batch_size)
    parts = components_of(subjects)

    table, scales, summaries = [], {}, {}
    for name in cfg.models:
        model, _ = loaded[name]
        scales[name] = (typical_spread(model, norm_rows, hook, dirs[0][2], pad_id=tok.pad_token_id,
                                       batch_size=cfg.batch_size) if cfg.alpha_unit == "spread" else
                        typical_norm(model, norm_rows, hook, pad_id=tok.pad_token_id, batch_size=cfg.batch_size))
        log.info(f"steering the {name}-RL model at {hook} (α unit: {cfg.alpha_unit} {scales[name]:.3f}): "
                 f"{len(cfg.alphas)} strengths × {len(dirs)} directions × {len(messages)} prompts × {cfg.k}")
        rows = sample_conditions(cfg, model, tok, hook, scales[name], dirs, messages)
        score_rows(rows, messages, reader, model, tok, rater, parts, cfg.batch_size,
                   read_probe=meta.get("position") not in PROMPT_ONLY)
        for r in rows:
            r["model"] = name
            r["prompt"] = user_text(messages[r["prompt_index"]])
        metrics = [m for m in METRICS + COMPONENTS if any(r.get(m) is not None for r in rows)]
        summaries[name] = dose_response(rows, metrics, n_prompts=len(messages), n_boot=cfg.n_boot, seed=cfg.seed)
        table += rows
    write_table(out / "completions.jsonl", table)

    patching = None
    if cfg.patch_pairs:
        patching = run_patching(cfg, subjects, loaded, tok, meta)
        patching = patching_summary(patching, n_boot=cfg.n_boot, seed=cfg.seed)

    figures = {"steering": "steering.png"}
    plot_steering(out / figures["steering"], summaries, hook)
    if patching is not None:
        figures["patching"] = "patching.png"
        plot_patching(out / figures["patching"], patching)
    result = SteerResult(
        config=cfg.to_dict(), pre=subjects.pre, post=subjects.post, dataset=subjects.dataset, rater=subjects.rater,
        beta=subjects.beta, probe=str(cfg.probe),
        probe_meta={k: meta.get(k) for k in ("model", "hook", "position", "objective")}, hook=hook,
        positions_from=cfg.positions_from, alphas=list(cfg.alphas), alpha_unit=cfg.alpha_unit, models=list(cfg.models),
        n_prompts=len(messages), k=cfg.k, n_random=cfg.n_random, fit_pairs=len(train), scale=scales,
        metrics=summaries, patching=patching, table="completions.jsonl", figures=figures,
        seconds=round(time.perf_counter() - t0, 2))
    result.save(out)
    return result


def run_patching(cfg: SteerConfig, subjects: Subjects, loaded, tok, meta: dict[str, Any]) -> dict[str, Any]:
    pairs = load_pairs(subjects.dataset, cfg.prompts, cfg.patch_pairs, cfg.seed + 1)
    rows, _ = encode_pairs(tok, pairs, 2048)
    encoded = [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]
    layers = list(cfg.patch_layers) or list(range(n_layers(loaded["post"][0])))
    log.info(f"patching {len(encoded)} pairs: {len(layers)} layers × {len(cfg.patch_positions)} positions")
    return margin_patching(loaded["pre"][0], loaded["post"][0], encoded, layers=layers,
                           positions=list(cfg.patch_positions), beta=subjects.beta, pad_id=tok.pad_token_id,
                           eos_id=tok.eos_token_id, hook_kind=parse_hook(meta["hook"]).kind,
                           batch_size=max(2, cfg.batch_size // 2), seed=cfg.seed)


def write_table(path: Path, table: list[dict]) -> None:
    """completions.jsonl, written whole to a temp file, then renamed."""
    import json

    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in table))


# ----- command line -----

def add_arguments(parser) -> None:
    add_config_arguments(parser, SteerConfig, config_file="YAML file (top-level keys, or a `steer:` section)")


def format_summary(result: SteerResult) -> str:
    unit = {"spread": "the activations' SD along the probe direction", "norm": "the typical activation norm"}[
        result.alpha_unit]
    lines = [f"steering at {result.hook} ({result.positions_from} on), α in units of {unit} ({result.scale}); "
             f"slope per unit α, 95% bootstrap CI over {result.n_prompts} prompts"]
    for name, summary in result.metrics.items():
        for metric in METRICS:
            s = summary.get(metric, {}).get("slopes")
            if not s:
                continue
            cells = [f"{kind} {v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for kind, v in s.items()]
            lines.append(f"{name} {metric}: " + "; ".join(cells))
    if result.patching:
        lines.append(f"patching: mean DPO margin {result.patching['margin']['mean']:.3f} over "
                     f"{result.patching['n_pairs']} pairs")
        for r in result.patching["rows"]:
            d, n = r["delta"], r["delta_null"]
            lines.append(f"  {r['direction']:<12} layer {r['layer']:>2} {r['position']:<16} Δmargin {d['mean']:+.3f} "
                         f"[{d['lo']:+.3f}, {d['hi']:+.3f}]  null {n['mean']:+.3f}  → {r['verdict']}")
    return "\n".join(lines)


def main(args) -> int:
    cfg = config_from_args(args, SteerConfig, "steer")
    with output_dir(cfg.out):  # checked, and locked against a second steer, before any model loads
        result = run_steer(cfg)
    print(format_summary(result))
    print(f"summary: {Path(cfg.out) / 'steer.json'}; table: {Path(cfg.out) / 'completions.jsonl'}")
    return 0
