"""The data side of `rsearch feedback`: its prompt sources, each prompt's split, and the rated samples turned into
ultrafeedback_binarized pairs (best-rated answer against the worst)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rsearch.data import load_records, pairs_from_records
from rsearch.errors import RsearchError, one_line
from rsearch.prompts import user_text
from rsearch.tasks.items import generate
from rsearch.tasks.rater import task_of

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
SPLITS = {"train": "train_prefs", "test": "test_prefs"}


@dataclass(frozen=True)
class FeedbackPrompt:
    """One prompt to sample answers for: its id, the conversation before the assistant's turn, its task kind
    (None where unknown) and its split ("train" or "test")."""

    prompt_id: str
    messages: tuple[dict, ...]
    task: str | None
    split: str

    @property
    def text(self) -> str:
        return user_text(self.messages)


def check_source(spec: str) -> None:
    """`tasks`, or an existing .txt/.jsonl/.json/.parquet file or dataset directory; else one RsearchError line."""
    if spec == "tasks":
        return
    p = Path(spec).expanduser()
    if p.is_dir():
        return
    if p.is_file():
        if p.suffix not in (".txt",) + TABLE_SUFFIXES:
            raise RsearchError(f"prompts {spec}: unsupported file type (use .txt, .jsonl, .json or .parquet)")
        return
    raise RsearchError(f"prompts {spec!r}: not `tasks`, and no such file or dataset directory")


def prompt_id_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_of_prompt(prompt_id: str, text: str, test_share: float) -> str:
    """A task prompt's item split (every phrasing of an item in one split), else a hash of the prompt id."""

    item = task_of(text, test_share)
    if item is not None:
        return item.split
    h = hashlib.sha256(f"feedback|{prompt_id}".encode()).digest()
    return "test" if int.from_bytes(h[:8], "big") / 2 ** 64 < test_share else "train"


def load_feedback_prompts(spec: str, n: int, seed: int, test_share: float) -> list[FeedbackPrompt]:
    """The first n distinct prompts of the source (in its order; `tasks`: n generated with `seed`)."""

    check_source(spec)
    if spec == "tasks":

        return [FeedbackPrompt(prompt_id_of(it.prompt), ({"role": "user", "content": it.prompt},), it.kind,
                               it.split) for it in generate(n, seed, test_share)]
    out: dict[str, FeedbackPrompt] = {}
    for pid, messages, task in _rows(spec):
        if len(out) == n:
            break
        if pid not in out:
            text = user_text(messages)
            out[pid] = FeedbackPrompt(pid, tuple(messages), task or _task_kind(text),
                                      split_of_prompt(pid, text, test_share))
    if not out:
        raise RsearchError(f"prompts {spec}: no prompts")
    return list(out.values())


def _task_kind(text: str) -> str | None:
    item = task_of(text)
    return item.kind if item is not None else None


def _rows(spec: str) -> list[tuple[str, list[dict], str | None]]:
    """(prompt id, messages, task kind or None) per row of a prompts file or dataset directory."""

    p = Path(spec).expanduser()
    if p.suffix == ".txt" and p.is_file():
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise RsearchError(f"{p}: not UTF-8 text (byte {e.start})") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return [(prompt_id_of(t), [{"role": "user", "content": t}], None) for t in lines]
    records = load_records(str(p), None) if p.is_file() else _dataset_records(p)
    if not records:
        raise RsearchError(f"prompts {spec}: no rows")
    if all(c in records[0] for c in ("chosen", "rejected", "score_chosen", "score_rejected")):
        pairs = pairs_from_records(records, str(p), as_preferences=False)  # its prompts, row by row
        return [(fp.prompt_id, list(fp.prompt), _str_or_none(r.get("task"))) for fp, r in zip(pairs, records)]
    if "prompt" not in records[0]:
        raise RsearchError(f"prompts {spec}: needs a 'prompt' column (or the ultrafeedback schema)")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise RsearchError(f"prompts {spec}: row {i}: 'prompt' must be a non-empty string")
        out.append((str(r.get("prompt_id") or prompt_id_of(r["prompt"])), [{"role": "user", "content": r["prompt"]}],
                    _str_or_none(r.get("task"))))
    return out


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dataset_records(directory: Path) -> list[dict[str, Any]]:
    """A local Hugging Face dataset directory's rows: its train split (else its first)."""
    import datasets

    try:
        ds = datasets.load_dataset(str(directory))
    except Exception as e:  # datasets raises many types for a folder it cannot read
        raise RsearchError(f"prompts {directory}: cannot load as a dataset ({one_line(e, 200)})") from None
    if not ds:
        raise RsearchError(f"prompts {directory}: the dataset has no splits")
    split = "train" if "train" in ds else next(iter(ds))
    return ds[split].to_list()


# ----- pairs -----

def pair_row(prompt: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The ultrafeedback row of one rated prompt (its samples.jsonl record), or None and why not ("tie": the best
    score is the worst, "empty": fewer than two non-empty answers; an empty answer is never one side of a pair,
    which `rsearch.data` would refuse)."""
    answers = [s for s in prompt["samples"] if s["text"].strip()]
    if len(answers) < 2:
        return None, "empty"
    best = max(answers, key=lambda s: s["score"])
    worst = min(answers, key=lambda s: s["score"])
    if best["score"] == worst["score"]:
        return None, "tie"
    context = list(prompt["messages"])
    chosen = context + [{"role": "assistant", "content": best["text"]}]
    row = {"prompt": prompt["prompt"], "prompt_id": prompt["prompt_id"], "chosen": chosen,
           "rejected": context + [{"role": "assistant", "content": worst["text"]}], "messages": chosen,
           "score_chosen": best["score"], "score_rejected": worst["score"]}
    if prompt.get("task"):
        row["task"] = prompt["task"]
    if "correct" in best:
        row["correct_chosen"], row["correct_rejected"] = best["correct"], worst["correct"]
    row["mean_score"] = prompt["mean_score"]
    return row, "pair"


def pair_splits(prompts: Sequence[dict[str, Any]]) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """({train_prefs, test_prefs: rows}, {ties, empty: prompts skipped}) of the rated prompts."""
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS.values()}
    skipped = {"tie": 0, "empty": 0}
    for p in prompts:
        row, why = pair_row(p)
        if row is None:
            skipped[why] += 1
        else:
            splits[SPLITS[p["split"]]].append(row)
    return splits, skipped
