"""`rsearch feedback`: a feedback dataset for a real model — k sampled answers per prompt, rated, the best-rated
answer paired against the worst, in the ultrafeedback_binarized schema `rsearch.data` reads.

Prompts come from a .txt file (one a line), a .jsonl/.json/.parquet file or a local Hugging Face dataset directory
(its `prompt` column, or the ultrafeedback schema's conversation), or `tasks`: the built-in natural-language tasks
(`rsearch.tasks.items.generate`). Each prompt is rendered with the model's chat template and its k answers drawn
from the model's own distribution (`rsearch.lm.decode_seed_batches`): the k answers of a prompt are one seed batch,
seeded from the seed and the prompt's id, so what a prompt gets depends neither on the other prompts nor on how
they are batched (up to the float rounding of the forward). The rater (`rsearch.raters`) scores every answer; a
prompt whose best score equals its worst (a tie) makes no pair and is counted. The split is the item's: a task
prompt's item split (every phrasing of one item in one split), else a hash of the prompt id.

Outputs under --out: `train_prefs.jsonl` and `test_prefs.jsonl` (what `rsearch train-probe --dataset OUT`
reads), `samples.jsonl` (every prompt's k answers with their scores and its mean score, the expected reward of
the prompt) and `feedback.json` (the summary). Each rated prompt is appended (fsynced) to
`.samples.partial.jsonl` at once, so a run stopped midway resumes where it stopped when started again with the
same settings, and a larger --n extends a finished run; the outputs are written atomically at the end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rsearch.chat import check_context, encode_conversation
from rsearch.config import Config, add_config_arguments, check, check_device, config_from_args, setting
from rsearch.errors import RsearchError
from rsearch.io_utils import append_jsonl, atomic_path, output_dir, read_jsonl, write_json
from rsearch.jobs.feedback_data import FeedbackPrompt, load_feedback_prompts, pair_splits
from rsearch.lm import decode_seed_batches
from rsearch.log import show_progress
from rsearch.models import load_model
from rsearch.raters import check_spec, load_rater
from rsearch.tasks.rater import rate_detail, task_of

log = logging.getLogger("rsearch.feedback")
PARTIAL, STAMP = ".samples.partial.jsonl", ".feedback.partial.json"


@dataclass(frozen=True)
class FeedbackConfig(Config):
    """Settings of `rsearch feedback`; each field's help is its flag's."""

    model: str = setting("", help="the chat model to sample: hub id, local directory, .gguf file or a short name "
                         "such as smollm2-135m-instruct")
    prompts: str = setting("tasks", help="tasks (the built-in task prompts), a .txt file (one prompt a line), a "
                           ".jsonl/.json/.parquet file or a local dataset directory with a prompt column")
    n: int = setting(100, short="-n", help="prompts: the source's first n distinct ones (tasks: n generated)")
    k: int = setting(4, short="-k", help="sampled answers per prompt (at least 2)")
    seed: int = setting(0, help="sampling seed (and the tasks drawn)")
    max_new_tokens: int = setting(128)
    temperature: float = setting(1.0)
    top_p: float = setting(1.0, help="nucleus sampling (1: the whole distribution)")
    top_k: int = setting(0, help="sample from the k most likely tokens (0: all)")
    sample_batch_size: int = setting(64, runtime=True, help="sequences decoded together (the draws do not depend "
                                     "on it)")
    rater: str = setting("", help="tasks, organism, a local reward model directory, module.path:callable "
                         "(rater(prompt, completion) -> float), or judge:MODEL[?rubric=FILE&...] (a judge model at "
                         "the OpenAI-compatible $RSEARCH_JUDGE_URL, key $RSEARCH_JUDGE_API_KEY)")
    test_share: float = setting(0.25, help="share of items in test_prefs")
    dtype: str = setting("float32")
    revision: str | None = setting(None, help="the model's hub revision")
    device: str = setting("auto", runtime=True)
    threads: int = setting(1, runtime=True, help="torch threads (0: torch's default)")
    out: str = setting("runs/feedback", runtime=True, help="output directory")

    def __post_init__(self) -> None:
        check(bool(self.model), "model: give --model (the chat model to sample answers from)")
        check(bool(self.prompts), "prompts: give --prompts (tasks, a prompts file or a dataset directory)")
        check(self.n >= 1, f"n: need at least 1 prompt, got {self.n}")
        check(self.k >= 2, f"k: need at least 2 answers per prompt to pair, got {self.k}")
        check(self.max_new_tokens >= 1, "max_new_tokens: must be at least 1")
        check(self.temperature > 0, f"temperature: must be positive (greedy answers are one answer), got "
              f"{self.temperature}")
        check(0 < self.top_p <= 1, f"top_p: must be in (0, 1], got {self.top_p}")
        check(self.top_k >= 0, f"top_k: must be ≥ 0 (0: all tokens), got {self.top_k}")
        check(self.sample_batch_size >= 1, "sample_batch_size: must be at least 1")
        check(bool(self.rater), "rater: give --rater (tasks, organism, a reward model directory, "
              "module.path:callable or judge:MODEL)")
        check(self.rater not in ("auto", "none"), f"rater: {self.rater} names no rater to rate with")
        check_spec(self.rater)
        check(0 <= self.test_share <= 1, f"test_share: must be in [0, 1], got {self.test_share}")
        check(self.threads >= 0, f"threads: must be ≥ 0 (0: torch's default), got {self.threads}")
        check_device(self.device)


def sampling_settings(cfg: FeedbackConfig) -> dict[str, Any]:
    return {"seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "top_k": cfg.top_k, "dtype": cfg.dtype}


def _identity(cfg: FeedbackConfig) -> dict[str, Any]:
    """What the finished prompts of a partial file were made with: a rerun that differs starts over (--n may
    change: a prompt's answers do not depend on the others; the batch size and thread count only round floats)."""
    import torch

    key = {k: v for k, v in cfg.key_dict().items() if k != "n"}
    # the draws come from a generator on the model's device, and a CUDA generator's stream is not the CPU's
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    key["draws_on"] = torch.device(device).type
    p = Path(cfg.prompts).expanduser()
    if p.exists():
        key["prompts"] = str(p.resolve())
    return key


def seed_batch_of(prompt_id: str) -> int:
    """The seed batch index of a prompt's k answers (its generator: seed * 100003 + this)."""
    return int(hashlib.sha256(f"feedback|{prompt_id}".encode()).hexdigest()[:12], 16)


def _check_rater_reads(cfg: FeedbackConfig, prompts: Sequence[FeedbackPrompt]) -> None:
    """The tasks rater scores task prompts only: refuse others before any model loads."""
    if cfg.rater != "tasks":
        return

    bad = next((p for p in prompts if task_of(p.text) is None), None)
    if bad is not None:
        raise RsearchError(f"rater tasks: prompt {bad.prompt_id} is not a task prompt ({bad.text[:60]!r}); "
                           "use --prompts tasks or another --rater")


def _rate(cfg: FeedbackConfig, rater, prompts: Sequence[FeedbackPrompt], texts: Sequence[str]
          ) -> list[dict[str, Any]]:
    """Per answer: {score} (the tasks rater: with `correct` too)."""
    if cfg.rater == "tasks":

        details = [rate_detail(list(p.messages), t) for p, t in zip(prompts, texts, strict=True)]
        return [{"score": float(d["score"]), "correct": float(d["correct"])} for d in details]
    scores = [float(s) for s in rater.rate([list(p.messages) for p in prompts], list(texts))]
    bad = next((i for i, s in enumerate(scores) if not math.isfinite(s)), None)
    if bad is not None:
        raise RsearchError(f"rater {cfg.rater}: scored an answer to prompt {prompts[bad].prompt_id} {scores[bad]} "
                           "(a feedback score must be a finite number)")
    return [{"score": s} for s in scores]


def _encode_all(cfg: FeedbackConfig, model, tokenizer, prompts: Sequence[FeedbackPrompt]) -> dict[str, tuple]:
    """{prompt id: its chat-templated token ids}; a prompt that leaves no room for the answers is refused before
    any is sampled."""

    ids = {p.prompt_id: encode_conversation(tokenizer, list(p.messages), None).ids for p in prompts}
    for pid, x in ids.items():
        check_context(len(x) + cfg.max_new_tokens, model, f"prompt {pid} with --max-new-tokens {cfg.max_new_tokens}")
    return ids


def _sample_chunk(cfg: FeedbackConfig, model, tokenizer, chunk: Sequence[FeedbackPrompt], encoded: dict[str, tuple]
                  ) -> list[list[dict]]:
    """Each prompt's k answers: {text, n_tokens, ended}."""

    ids = [encoded[p.prompt_id] for p in chunk]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    got = decode_seed_batches(model, [(seed_batch_of(p.prompt_id), [x] * cfg.k) for p, x in zip(chunk, ids)],
                              seed=cfg.seed, max_new_tokens=cfg.max_new_tokens, pad_id=pad, stop_ids=[eos],
                              temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                              max_batch=len(chunk) * cfg.k)
    return [[{"text": tokenizer.decode(list(toks), skip_special_tokens=True).strip(), "n_tokens": len(toks),
              "ended": ended} for toks, ended in answers] for answers in got]


def _record(p: FeedbackPrompt, samples: list[dict]) -> dict[str, Any]:
    scores = [s["score"] for s in samples]
    return {"prompt_id": p.prompt_id, "prompt": p.text, "messages": list(p.messages), "task": p.task,
            "split": p.split, "mean_score": sum(scores) / len(scores), "samples": samples}


def _finished(out: Path, cfg: FeedbackConfig) -> dict[str, dict]:
    """{prompt id: record} of the prompts a previous run with these settings finished (reads only)."""
    stamp = out / STAMP
    if not stamp.is_file() or json.loads(stamp.read_text()) != _identity_json(cfg):
        if (out / PARTIAL).exists():
            log.info(f"{out / PARTIAL}: made with other settings; starting over")
        return {}
    return {r["prompt_id"]: r for r in read_jsonl(out / PARTIAL)}


def _identity_json(cfg: FeedbackConfig) -> dict[str, Any]:
    return json.loads(json.dumps(_identity(cfg), default=str))


def _start_appending(out: Path, cfg: FeedbackConfig, done: dict[str, dict]) -> None:
    """The partial file holding exactly the finished prompts (a torn last line or another run's dropped), stamped
    with these settings."""
    partial = out / PARTIAL
    if done or partial.exists():
        with atomic_path(partial) as tmp:
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in done.values()))
    write_json(out / STAMP, _identity_json(cfg))


def build_feedback(config: FeedbackConfig) -> dict[str, Any]:
    """Samples, rates and pairs (see the module docstring); writes the outputs under `config.out` and returns the
    summary (feedback.json)."""
    import torch

    cfg = config
    t0 = time.perf_counter()
    prompts = load_feedback_prompts(cfg.prompts, cfg.n, cfg.seed, cfg.test_share)
    _check_rater_reads(cfg, prompts)
    with output_dir(cfg.out) as out:
        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            done = _finished(out, cfg)
            todo = [p for p in prompts if p.prompt_id not in done]
            if todo:
                _sample_and_rate(cfg, todo, done, out, len(prompts))
        finally:
            torch.set_num_threads(threads)
        records = [done[p.prompt_id] for p in prompts]
        summary = _write_outputs(cfg, out, records, resumed=len(prompts) - len(todo),
                                 seconds=time.perf_counter() - t0)
    return summary


def _sample_and_rate(cfg: FeedbackConfig, todo: list[FeedbackPrompt], done: dict[str, dict], out: Path,
                     total: int) -> None:
    from tqdm.auto import tqdm


    rater = None if cfg.rater == "tasks" else load_rater(cfg.rater, device=cfg.device, dtype=cfg.dtype)
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, cfg.revision)
    encoded = _encode_all(cfg, model, tokenizer, todo)
    _start_appending(out, cfg, done)
    per_chunk = max(1, cfg.sample_batch_size // cfg.k)
    log.info(f"sampling {cfg.k} answers × {len(todo)} prompts from {cfg.model}"
             + (f" ({total - len(todo)} done before)" if len(todo) < total else ""))
    with tqdm(total=total, initial=total - len(todo), desc="feedback", unit="prompt",
              disable=not show_progress()) as bar:  # closed before an error is printed
        for a in range(0, len(todo), per_chunk):
            chunk, t0 = todo[a:a + per_chunk], time.perf_counter()
            answers = _sample_chunk(cfg, model, tokenizer, chunk, encoded)
            flat = [(p, s) for p, ss in zip(chunk, answers) for s in ss]
            rated = _rate(cfg, rater, [p for p, _ in flat], [s["text"] for _, s in flat])
            seconds = round((time.perf_counter() - t0) / len(chunk), 3)
            for i, p in enumerate(chunk):
                samples = [{**s, **r} for s, r in zip(answers[i], rated[i * cfg.k:(i + 1) * cfg.k])]
                # the partial file alone keeps the time (samples.jsonl stays the same on every rerun)
                done[p.prompt_id] = {**_record(p, samples), "seconds": seconds}
                append_jsonl(out / PARTIAL, done[p.prompt_id])
            bar.update(len(chunk))


def _write_outputs(cfg: FeedbackConfig, out: Path, records: list[dict], resumed: int, seconds: float
                   ) -> dict[str, Any]:
    splits, skipped = pair_splits(records)
    for name, rows in splits.items():
        if not rows:
            log.warning(f"{name}: no pairs (too few prompts, or every one a tie)")
        with atomic_path(out / f"{name}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with atomic_path(out / "samples.jsonl") as tmp:
        tmp.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "seconds"}) + "\n" for r in records))
    scores = [s["score"] for r in records for s in r["samples"]]
    summary: dict[str, Any] = {
        "model": cfg.model, "revision": cfg.revision, "prompts": cfg.prompts, "rater": cfg.rater,
        "n_prompts": len(records), "k": cfg.k, "pairs": {name: len(rows) for name, rows in splits.items()},
        "ties_skipped": skipped["tie"], "empty_skipped": skipped["empty"],
        "mean_score": sum(scores) / len(scores) if scores else float("nan"),
        "prompts_per_split": {name: sum(r["split"] == s for r in records)
                              for s, name in (("train", "train_prefs"), ("test", "test_prefs"))},
        "resumed_prompts": resumed, "seconds": round(seconds, 2),
        "seconds_sampling_all_runs": round(sum(r.get("seconds", 0.0) for r in records), 2),
        "sampling": sampling_settings(cfg),
        "test_share": cfg.test_share}
    correct = [s["correct"] for r in records for s in r["samples"] if "correct" in s]
    if correct:
        rows = [row for rows in splits.values() for row in rows]
        summary["share_right"] = sum(correct) / len(correct)
        summary["share_right_chosen"] = (sum(r["correct_chosen"] for r in rows) / len(rows)) if rows else None
        summary["share_right_rejected"] = (sum(r["correct_rejected"] for r in rows) / len(rows)) if rows else None
    write_json(out / "feedback.json", summary)
    return summary


# ----- command line -----

def add_arguments(parser) -> None:
    add_config_arguments(parser, FeedbackConfig, config_file="YAML file (top-level keys, or a `feedback:` section)")


def format_summary(s: dict[str, Any]) -> str:
    pairs = ", ".join(f"{name} {n}" for name, n in s["pairs"].items())
    lines = [f"{s['n_prompts']} prompts × {s['k']} answers from {s['model']} in {s['seconds']:.1f} s"
             + (f" ({s['resumed_prompts']} resumed; sampling and rating took {s['seconds_sampling_all_runs']:.1f} s "
                "over all runs)" if s["resumed_prompts"] else ""),
             f"pairs: {pairs}; skipped: {s['ties_skipped']} ties, {s['empty_skipped']} with < 2 non-empty answers",
             f"mean score {s['mean_score']:.3f}"]
    if "share_right" in s:
        lines[-1] += f"; right: {s['share_right']:.1%} of answers"
        if s["share_right_chosen"] is not None:
            lines[-1] += f", {s['share_right_chosen']:.1%} of chosen, {s['share_right_rejected']:.1%} of rejected"
    return "\n".join(lines)


def main(args) -> int:
    cfg = config_from_args(args, FeedbackConfig, "feedback")
    summary = build_feedback(cfg)
    print(format_summary(summary))
    print(f"→ {Path(cfg.out) / 'train_prefs.jsonl'}, test_prefs.jsonl, samples.jsonl, feedback.json")
    return 0
