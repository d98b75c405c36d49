"""TRL's trainers (the ones zephyr and SmolLM2 were made with) on rows that rsearch has already tokenized.

`preference_trainer` builds a `trl.DPOTrainer` (DPO's sigmoid loss or IPO, optionally plus the chosen answers' NLL
as RPO does) or a `trl.SFTTrainer` (SFT on the chosen answers) from `rsearch.training.preference_rows` rows. The DPO
reference is the starting model, its log-probs computed once before training (`precompute_ref_log_probs`), so no
second model is kept. Checkpoints (weights, optimizer, scheduler, RNG and data order) go to `checkpoint_dir`, and
`trainer.train(resume_from_checkpoint=True)` continues a killed run where its last checkpoint left it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rsearch.errors import RsearchError

SCHEMES = ("dpo", "ipo", "sft")


@dataclass(frozen=True)
class TrainerSettings:
    scheme: str
    beta: float
    nll_weight: float
    learning_rate: float
    epochs: float
    max_steps: int
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    seed: int
    save_steps: int
    eval_steps: int
    logging_steps: int
    lora_r: int
    lora_alpha: int
    use_cpu: bool


def require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        raise RsearchError("train-policy needs TRL: pip install 'rsearch[train]'") from None


def _lora(s: TrainerSettings):
    if not s.lora_r:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise RsearchError("--lora-r needs peft: pip install 'rsearch[train]'") from None
    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def _common(s: TrainerSettings, checkpoint_dir: Path, has_eval: bool) -> dict[str, Any]:
    return dict(
        output_dir=str(checkpoint_dir), per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum, learning_rate=s.learning_rate, num_train_epochs=s.epochs,
        max_steps=s.max_steps if s.max_steps else -1, lr_scheduler_type="cosine", warmup_steps=s.warmup_ratio,  # < 1: a share of the steps
        seed=s.seed, data_seed=s.seed, logging_steps=s.logging_steps, save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=1, eval_strategy="steps" if has_eval else "no", eval_steps=s.eval_steps if has_eval else None,
        report_to="none", use_cpu=s.use_cpu, bf16=False, fp16=False, dataloader_num_workers=0,
        disable_tqdm=True, max_length=None)


def preference_trainer(s: TrainerSettings, model, tokenizer, train_rows: Sequence[dict], eval_rows: Sequence[dict],
                       checkpoint_dir: Path, callbacks: Sequence = ()):
    """A TRL trainer for `s.scheme` on pre-tokenized rows (`dpo_rows` for dpo/ipo, `sft_rows` for sft). It prints
    nothing itself: `callbacks` show the progress."""
    trainer = _trainer(s, model, tokenizer, train_rows, eval_rows, checkpoint_dir, callbacks)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _trainer(s: TrainerSettings, model, tokenizer, train_rows, eval_rows, checkpoint_dir: Path, callbacks):
    require_trl()
    from datasets import Dataset

    model.requires_grad_(not s.lora_r)  # rsearch loads models frozen; LoRA unfreezes only its adapters
    model.train()
    train, evald = Dataset.from_list(list(train_rows)), Dataset.from_list(list(eval_rows)) if eval_rows else None
    common = _common(s, checkpoint_dir, evald is not None)
    if s.scheme == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, completion_only_loss=True, packing=False)
        return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer,
                          peft_config=_lora(s), callbacks=list(callbacks))
    from trl import DPOConfig

    losses = ["ipo" if s.scheme == "ipo" else "sigmoid"] + (["sft"] if s.nll_weight else [])
    weights = [1.0] + ([s.nll_weight] if s.nll_weight else [])
    args = DPOConfig(**common, beta=s.beta, loss_type=losses, loss_weights=weights, precompute_ref_log_probs=True)
    return _tokenized_dpo_class()(model=model, args=args, train_dataset=train, eval_dataset=evald,
                                processing_class=tokenizer, peft_config=_lora(s), callbacks=list(callbacks))


def _tokenized_dpo_class():
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on rows that hold prompt_ids / chosen_ids / rejected_ids already (its own preparation
        would apply the chat template to the text, special markers in user text included)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"{dataset_name} rows lack {sorted(missing)}: tokenize with rsearch.training")
            return dataset

    return TokenizedDPOTrainer


def final_model(trainer):
    """The trained model as a plain transformers model: LoRA adapters merged into the weights."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True  # training turns the KV cache off; sampling without it is ~8× slower
    model.eval()
    model.requires_grad_(False)
    return model
