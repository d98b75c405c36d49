"""`rsearch train-policy`: a post-RL model from a pre-RL chat model and feedback on its answers.

The pre-RL model (hub id, HF folder, .gguf file or a short name such as smollm2-135m-instruct) is trained on the
train split of a feedback dataset in the ultrafeedback_binarized schema (`rsearch feedback` makes one with a known
rater) by TRL (`rsearch.training.trl_trainers`):

    dpo   DPO's sigmoid loss, β (zephyr: 0.1 in this codebase's organism; 0.01 in zephyr's own recipe);
    ipo   IPO's squared loss, β its regularization;
    sft   SFT on the chosen answers (best-of-k rejection sampling when the data holds a model's best of k).

`--nll-weight w` adds w × the chosen answers' NLL to a DPO/IPO loss (RPO). `--lora-r r` trains LoRA adapters
(merged into the weights at the end) in place of every weight. Pairs are tokenized by rsearch's chat encoder, so
user text never becomes a template marker; ties are dropped and counted.

Outputs under --out: the post-RL model as an HF folder (what `--post` reads everywhere), `card.json` and
`README.md` (scheme, settings, the data's hash, the rater, the training time, and — on held-out data — the DPO
implicit-reward accuracy of post against pre and, with a rater, both models' true reward, post − pre with its
prompt-clustered CI and, with the tasks rater, its correctness and style parts), and `train_log.jsonl` (the loss and
the implicit-reward accuracy on the training run's validation pairs, by step). Checkpoints under
`--out/checkpoints` make a killed run continue where it stopped when started again with the same settings (other
settings start over); they are removed when the model is saved. Bad input is refused before the model loads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsearch.analysis.policy_gain import implicit_reward_accuracy, reward_gain
from rsearch.config import Config, add_config_arguments, check, check_device, config_from_args, setting
from rsearch.data import FeedbackPair, load_splits
from rsearch.errors import RsearchError
from rsearch.io_utils import atomic_path, output_dir, write_json, write_text
from rsearch.log import show_progress
from rsearch.models import load_model, load_tokenizer, resolve_device, resolve_model_path
from rsearch.raters import check_spec, load_rater
from rsearch.training.preference_rows import dpo_rows, sft_rows
from rsearch.training.trl_trainers import SCHEMES, TrainerSettings, final_model, preference_trainer, require_trl

log = logging.getLogger("rsearch.train_policy")
STAMP, CHECKPOINTS, TRAINED = ".train_policy.json", "checkpoints", ".trained.json"


@dataclass(frozen=True)
class TrainPolicyConfig(Config):
    """Settings of `rsearch train-policy`; each field's help is its flag's."""

    model: str = setting("", help="the pre-RL chat model: hub id, local directory, .gguf file or a short name such "
                         "as smollm2-135m-instruct")
    dataset: str = setting("", help="feedback data in the ultrafeedback_binarized schema (a directory with "
                           "train_prefs/test_prefs, as `rsearch feedback` writes, or a file)")
    scheme: str = setting("dpo", help="dpo (sigmoid loss), ipo, or sft (on the chosen answers)")
    beta: float = setting(0.1, help="DPO/IPO β (the implicit KL penalty's strength)")
    nll_weight: float = setting(0.0, help="weight of the chosen answers' NLL added to a DPO/IPO loss (RPO; 0: off)")
    learning_rate: float = setting(5e-6, help="peak learning rate (cosine schedule with warm-up)")
    epochs: float = setting(1.0, help="passes over the training pairs")
    max_steps: int = setting(0, help="stop after this many optimizer steps (0: --epochs decides)")
    batch_size: int = setting(8, help="pairs per forward")
    grad_accum: int = setting(1, help="forwards per optimizer step")
    warmup_ratio: float = setting(0.1, help="share of the steps the learning rate warms up over")
    max_length: int = setting(512, help="longest prompt + answer in tokens; longer pairs are dropped and counted")
    max_train: int = setting(0, help="train on at most this many pairs (0: all)")
    eval_pairs: int = setting(64, help="validation pairs whose implicit-reward accuracy is logged while training")
    lora_r: int = setting(0, help="LoRA rank (0: train every weight)")
    lora_alpha: int = setting(16, help="LoRA α")
    save_steps: int = setting(10, help="a checkpoint every this many steps (what a resumed run continues from)")
    logging_steps: int = setting(5, help="log the loss every this many steps")
    seed: int = setting(0)
    rater: str = setting("", help="rate held-out answers of both models with this rater (tasks, organism, a reward "
                         "model directory, module.path:callable or judge:MODEL; empty: no true-reward evaluation)")
    eval_prompts: int = setting(64, help="held-out (test) prompts the true reward of both models is measured on")
    eval_k: int = setting(2, help="answers sampled per held-out prompt and model")
    max_new_tokens: int = setting(48, help="longest held-out answer sampled")
    temperature: float = setting(1.0, help="sampling temperature of the held-out answers")
    top_p: float = setting(1.0, help="nucleus sampling of the held-out answers (1: the whole distribution)")
    top_k: int = setting(0, help="top-k sampling of the held-out answers (0: all tokens)")
    sample_batch_size: int = setting(64, runtime=True, help="sequences decoded together")
    dtype: str = setting("float32")
    revision: str | None = setting(None, help="the model's hub revision")
    device: str = setting("auto", runtime=True)
    out: str = setting("runs/policy", runtime=True, help="output directory: the post-RL model's HF folder")

    def __post_init__(self) -> None:
        check(bool(self.model), "model: give --model (the pre-RL chat model)")
        check(bool(self.dataset), "dataset: give --dataset (feedback data, e.g. from rsearch feedback)")
        check(self.scheme in SCHEMES, f"scheme: one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        check(self.beta > 0 and math.isfinite(self.beta), f"beta: must be a positive number, got {self.beta}")
        check(self.nll_weight >= 0 and math.isfinite(self.nll_weight), "nll_weight: must be ≥ 0")
        check(not (self.nll_weight and self.scheme == "sft"), "nll_weight: only with dpo or ipo (sft is all NLL)")
        check(0 < self.learning_rate < 1, f"learning_rate: must be in (0, 1), got {self.learning_rate}")
        check(self.epochs > 0 and math.isfinite(self.epochs), "epochs: must be positive")
        check(self.max_steps >= 0, "max_steps: must be ≥ 0 (0: --epochs decides)")
        check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum: must be at least 1")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio: must be in [0, 1)")
        check(self.max_length >= 8, "max_length: must be at least 8 tokens")
        check(self.max_train >= 0 and self.eval_pairs >= 0, "max_train and eval_pairs: must be ≥ 0")
        check(self.lora_r >= 0 and self.lora_alpha >= 1, "lora_r ≥ 0 (0: off) and lora_alpha ≥ 1")
        check(self.save_steps >= 1 and self.logging_steps >= 1, "save_steps and logging_steps: must be at least 1")
        if self.rater:
            check(self.rater not in ("auto", "none"), f"rater: {self.rater} names no rater to rate with")
            check_spec(self.rater)
        check(self.eval_prompts >= 2 and self.eval_k >= 1, "eval_prompts ≥ 2 and eval_k ≥ 1")
        check(self.max_new_tokens >= 1 and self.temperature > 0, "max_new_tokens ≥ 1 and temperature > 0")
        check(0 < self.top_p <= 1 and self.top_k >= 0, "top_p in (0, 1] and top_k ≥ 0")
        check_device(self.device)

    def trainer_settings(self, use_cpu: bool) -> TrainerSettings:
        return TrainerSettings(
            scheme=self.scheme, beta=self.beta, nll_weight=self.nll_weight, learning_rate=self.learning_rate,
            epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size, grad_accum=self.grad_accum,
            warmup_ratio=self.warmup_ratio, seed=self.seed, save_steps=self.save_steps, eval_steps=self.save_steps,
            logging_steps=self.logging_steps, lora_r=self.lora_r, lora_alpha=self.lora_alpha, use_cpu=use_cpu)


def dataset_hash(dataset: str) -> str:
    """sha256 over the dataset's files (names and bytes): what the card names the data by."""
    root = Path(dataset).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and
                                                 not p.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root.parent if root.is_file() else root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _drop_ties(pairs: list[FeedbackPair]) -> tuple[list[FeedbackPair], dict[str, int]]:
    kept = [p for p in pairs if p.score_chosen != p.score_rejected]  # rsearch.data refuses all-inverted data
    return kept, {"ties": len(pairs) - len(kept), "inverted": sum(p.score_chosen < p.score_rejected for p in kept)}


def checked_inputs(cfg: TrainPolicyConfig) -> tuple[dict[str, list[FeedbackPair]], dict[str, Any]]:
    """The splits (ties dropped) and what was dropped; refused with one line before any model loads."""
    splits = load_splits(cfg.dataset, seed=cfg.seed, max_train=cfg.max_train or None)
    dropped = {}
    for name in ("train", "val", "test"):
        splits[name], dropped[name] = _drop_ties(splits[name])
    if not splits["train"]:
        raise RsearchError(f"{cfg.dataset}: no training pair with different scores (every pair is a tie)")
    tokenizer = load_tokenizer(resolve_model_path(cfg.model), revision=cfg.revision)
    if not getattr(tokenizer, "chat_template", None):
        raise RsearchError(f"{cfg.model}: the tokenizer has no chat template (train-policy trains a chat model)")
    return splits, dropped


def _identity(cfg: TrainPolicyConfig, data_hash: str) -> dict[str, Any]:
    """What a checkpoint was made with: a rerun that differs starts over."""
    keep = ("model", "scheme", "beta", "nll_weight", "learning_rate", "epochs", "max_steps", "batch_size",
            "grad_accum", "warmup_ratio", "max_length", "max_train", "eval_pairs", "lora_r", "lora_alpha",
            "save_steps", "seed", "dtype", "revision")
    return json.loads(json.dumps({**{k: getattr(cfg, k) for k in keep}, "data": data_hash}))


def _resume_from(out: Path, identity: dict[str, Any]) -> bool:
    ckpt = out / CHECKPOINTS
    stamp = out / STAMP
    same = stamp.is_file() and json.loads(stamp.read_text()) == identity
    if ckpt.exists() and not same:
        log.info(f"{ckpt}: made with other settings or data; starting over")
        shutil.rmtree(ckpt)
    write_json(stamp, identity)
    return same and any(ckpt.glob("checkpoint-*"))


def _progress_callback():
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A bar over the optimizer steps and one log line per logging step: the loss and, where evaluated, the
        validation pairs' implicit-reward accuracy (in place of the Trainer's printed dicts)."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train-policy", unit="step",
                            disable=not show_progress())

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {k: v for k, v in (logs or {}).items() if k in LOGGED}
            if shown:
                log.info(f"step {state.global_step}/{state.max_steps}: "
                         + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))

    return Progress()


LOGGED = ("loss", "rewards/accuracies", "rewards/margins", "eval_loss", "eval_rewards/accuracies",
          "eval_rewards/margins")


def _save_model(model, tokenizer, out: Path) -> None:
    """The HF folder, written next to --out's files and moved in: weights first, config.json last of them."""
    tmp = out / ".model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    names = sorted((p.name for p in tmp.iterdir()), key=lambda n: n == "config.json")
    for name in names:
        (tmp / name).replace(out / name)
    tmp.rmdir()


def _evaluate(cfg: TrainPolicyConfig, post, tokenizer, splits) -> dict[str, Any]:
    pre, _ = load_model(cfg.model, cfg.dtype, cfg.device, cfg.revision)
    result: dict[str, Any] = {}
    beta = cfg.beta if cfg.scheme != "sft" else 1.0
    log.info("held-out evaluation: the implicit reward of post against pre")
    result["implicit_reward"] = {
        "test": implicit_reward_accuracy(pre, post, tokenizer, splits["test"], beta=beta, seed=cfg.seed),
        "train": implicit_reward_accuracy(pre, post, tokenizer, splits["train"][:len(splits["test"])], beta=beta,
                                          seed=cfg.seed)}
    if cfg.rater:
        prompts = list({p.prompt_id: list(p.prompt) for p in splits["test"]}.values())[:cfg.eval_prompts]
        rater = None if cfg.rater == "tasks" else load_rater(cfg.rater, device=cfg.device, dtype=cfg.dtype)
        log.info(f"held-out evaluation: {cfg.eval_k} answers × {len(prompts)} test prompts from each model, "
                 f"rated by {cfg.rater}")
        result["true_reward"] = reward_gain(
            pre, post, tokenizer, prompts, cfg.rater, rater, k=cfg.eval_k, seed=cfg.seed,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
            batch_size=cfg.sample_batch_size, progress=show_progress())
    return result


def _train(cfg: TrainPolicyConfig, out: Path, splits, resume: bool) -> dict[str, Any]:
    """Trains and saves the post-RL model under `out`; returns what the card says of the training."""
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, cfg.revision)
    make = sft_rows if cfg.scheme == "sft" else dpo_rows
    train, evald = make(tokenizer, splits["train"], cfg.max_length), make(
        tokenizer, splits["val"][:cfg.eval_pairs], cfg.max_length)
    if not train.rows:
        raise RsearchError(f"{cfg.dataset}: no training pair fits --max-length {cfg.max_length} "
                           f"(dropped: {train.dropped})")
    use_cpu = resolve_device(cfg.device) == "cpu"
    trainer = preference_trainer(cfg.trainer_settings(use_cpu), model, tokenizer, train.rows, evald.rows,
                                 out / CHECKPOINTS, callbacks=[_progress_callback()])
    log.info(f"{cfg.scheme} on {len(train.rows)} pairs of {cfg.dataset}"
             + (f" (dropped: {train.dropped})" if train.dropped else "")
             + (", resuming from the last checkpoint" if resume else ""))
    t0 = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - t0
    _save_model(final_model(trainer), tokenizer, out)
    with atomic_path(out / "train_log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(dict(h)) + "\n" for h in trainer.state.log_history))
    steps = trainer.state.global_step
    return {"pairs": {"train": len(train.rows), "val_logged": len(evald.rows), "test": len(splits["test"])},
            "dropped_train_rows": train.dropped, "steps": steps, "train_seconds_this_run": round(seconds, 1),
            "seconds_per_step": None if resume else round(seconds / max(1, steps), 3),
            "train_loss": outcome.training_loss, "resumed": resume}


def train_policy(cfg: TrainPolicyConfig) -> dict[str, Any]:
    """Trains, saves and evaluates (see the module docstring); returns the card. A run killed after the model was
    saved evaluates it again without training."""
    require_trl()
    splits, dropped = checked_inputs(cfg)
    data_hash = dataset_hash(cfg.dataset)
    identity = _identity(cfg, data_hash)
    with output_dir(cfg.out) as out:
        trained = out / TRAINED
        done = json.loads(trained.read_text()) if trained.is_file() else None
        if done is None or done.get("identity") != identity or not (out / "config.json").is_file():
            resume = _resume_from(out, identity)
            done = {"identity": identity, **_train(cfg, out, splits, resume)}
            write_json(trained, done)
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        else:
            log.info(f"{out}: trained before with these settings; evaluating it")
        post, tokenizer = load_model(str(out), cfg.dtype, cfg.device)
        evaluation = _evaluate(cfg, post, tokenizer, splits)
        card = {"pre_model": cfg.model, "scheme": cfg.scheme, "settings": cfg.key_dict(), "data": cfg.dataset,
                "data_sha256": data_hash, "rater": cfg.rater or None,
                **{k: v for k, v in done.items() if k != "identity"},
                "dropped": {"ties_and_inverted": dropped, "train_rows": done["dropped_train_rows"]},
                "evaluation": evaluation, "made_with": "trl " + __import__("trl").__version__}
        card.pop("dropped_train_rows")
        write_json(out / "card.json", card)
        write_text(out / "README.md", model_card(card))
    return card


def _part_line(name: str, s: dict[str, Any]) -> str:
    return (f"{name}: pre {s['mean_pre']:.3f} → post {s['mean_post']:.3f}, post − pre {s['diff']:+.3f} "
            f"[{s['ci_lo']:+.3f}, {s['ci_hi']:+.3f}] over {s['n_prompts']} prompts")


def format_summary(card: dict[str, Any]) -> str:
    ev = card["evaluation"]
    lines = [f"{card['scheme']} from {card['pre_model']}: {card['steps']} steps on {card['pairs']['train']} pairs "
             f"in {card['train_seconds_this_run']:.0f} s"]
    for split in ("test", "train"):
        a = ev["implicit_reward"][split]
        lines.append(f"implicit-reward accuracy of post against pre, {split} pairs: {a['accuracy']:.3f} "
                     f"[{a['ci_lo']:.3f}, {a['ci_hi']:.3f}] (n {a['n_pairs']})")
    if "true_reward" in ev:
        tr = ev["true_reward"]
        lines.append(f"true reward ({card['rater']}, {tr['k']} answers per held-out prompt):")
        lines += ["  " + _part_line(part, s) for part, s in tr["parts"].items()]
    return "\n".join(lines)


def model_card(card: dict[str, Any]) -> str:
    s = card["settings"]
    return "\n".join([
        f"# Post-RL model: {card['scheme']} from {card['pre_model']}", "",
        f"Made by `rsearch train-policy` ({card['made_with']}) on `{card['data']}` (sha256 {card['data_sha256']}),"
        f" rated by {card['rater'] or 'the data’s own scores'}.", "",
        f"Settings: β {s['beta']}, learning rate {s['learning_rate']}, {card['steps']} steps × batch "
        f"{s['batch_size']} × {s['grad_accum']}, LoRA r {s['lora_r'] or 'off'}, NLL weight {s['nll_weight']}.", "",
        "## Held-out evaluation", "", "```", format_summary(card), "```", ""])


# ----- command line -----

def add_arguments(parser) -> None:
    add_config_arguments(parser, TrainPolicyConfig, config_file="YAML file (top-level keys, or a `train_policy:` "
                         "section)")


def main(args) -> int:
    cfg = config_from_args(args, TrainPolicyConfig, "train_policy")
    card = train_policy(cfg)
    print(format_summary(card))
    print(f"→ {cfg.out} (the post-RL model: pass it as --post), card.json, README.md")
    return 0
