"""Feedback data in the ultrafeedback_binarized schema: hub ids with split names, or local JSONL/parquet.

Columns used: prompt, prompt_id, chosen, rejected (lists of {role, content} ending in the assistant's reply,
or plain strings), score_chosen, score_rejected. A single local file is split into train, validation and test
by a seeded split over prompt ids, so no prompt is in two splits.
"""
from __future__ import annotations

import hashlib
import logging
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rsearch.chat import ROLES
from rsearch.errors import RsearchError, one_line

REQUIRED = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
Message = dict


@dataclass(frozen=True)
class FeedbackPair:
    prompt_id: str
    prompt: tuple[Message, ...]  # the conversation before the assistant's reply
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float
    extra: tuple[tuple[str, Any], ...] = ()  # other columns (e.g. the organism's true scores)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)


def _messages(value: list, column: str, row: int, source: str) -> tuple[Message, ...]:
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise RsearchError(f"{source}: row {row}: message {k} of column {column!r} needs a 'role' and a "
                               "'content'")
        if m["role"] not in ROLES:
            raise RsearchError(f"{source}: row {row}: message {k} of column {column!r} has role {m['role']!r}: use "
                               f"{', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise RsearchError(f"{source}: row {row}: message {k} of column {column!r} has a non-text content")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def _split_reply(value: Any, prompt: str, column: str, row: int, source: str
                 ) -> tuple[tuple[Message, ...], str]:
    if isinstance(value, str):
        return ({"role": "user", "content": prompt},), value
    if isinstance(value, (list, tuple)) and value:
        messages = _messages(list(value), column, row, source)
        if messages[-1]["role"] != "assistant":
            raise RsearchError(f"{source}: row {row}: column {column!r} must end with an assistant message")
        return messages[:-1] or ({"role": "user", "content": prompt},), messages[-1]["content"]
    raise RsearchError(f"{source}: row {row}: column {column!r} must be a string or a list of messages")


def pairs_from_records(records: Sequence[dict[str, Any]], source: str = "dataset", *, as_preferences: bool = True
                       ) -> list[FeedbackPair]:
    """Validates rows of the ultrafeedback_binarized schema and turns them into FeedbackPairs.

    as_preferences: the rows will be read as preferences (probes, DPO, patching): a row whose chosen equals its
    rejected completion is dropped (it prefers nothing) and swapped score columns are refused. False for readers of
    the prompts or of every row in place (prompt sets, `rsearch rate`), which keep each row as it is.
    """
    if not records:
        raise RsearchError(f"{source}: no rows")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise RsearchError(f"{source}: row {i} is not a JSON object")
        missing = [c for c in REQUIRED if c not in r]
        if missing:
            raise RsearchError(f"{source}: row {i}: missing column {missing[0]!r} (needs {', '.join(REQUIRED)})")
        if not isinstance(r["prompt"], str):
            raise RsearchError(f"{source}: row {i}: column 'prompt' must be a string")
        context, chosen = _split_reply(r["chosen"], r["prompt"], "chosen", i, source)
        _, rejected = _split_reply(r["rejected"], r["prompt"], "rejected", i, source)
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            if not text.strip():
                raise RsearchError(f"{source}: row {i} has an empty {name} completion")
        try:
            sc, sr = float(r["score_chosen"]), float(r["score_rejected"])
        except (TypeError, ValueError):
            raise RsearchError(f"{source}: row {i} has a non-numeric score") from None
        if not (math.isfinite(sc) and math.isfinite(sr)) or isinstance(r["score_chosen"], bool) \
                or isinstance(r["score_rejected"], bool):
            raise RsearchError(f"{source}: row {i} has a score that is not a finite number")
        pid = str(r.get("prompt_id") or hashlib.sha256(str(r["prompt"]).encode()).hexdigest()[:16])
        extra = tuple(sorted((k, v) for k, v in r.items() if k not in REQUIRED + ("prompt_id", "messages")
                             and isinstance(v, (int, float, str, bool))))
        out.append(FeedbackPair(pid, context, chosen, rejected, sc, sr, extra))
    if not as_preferences:
        return out
    same = sum(p.chosen == p.rejected for p in out)
    out = [p for p in out if p.chosen != p.rejected]
    if not out:
        raise RsearchError(f"{source}: every row's chosen completion is identical to its rejected one")
    ordered = [p for p in out if p.score_chosen != p.score_rejected]
    inverted = sum(p.score_chosen < p.score_rejected for p in ordered)
    if ordered and inverted == len(ordered):
        raise RsearchError(f"{source}: every row scores its chosen completion below its rejected one (are the "
                           "score columns swapped?)")
    if same or inverted:
        logging.getLogger("rsearch.data").warning(
            f"{source}: " + "; ".join(part for part in (
                f"{same} row(s) whose chosen completion equals the rejected one dropped" if same else "",
                f"{inverted} row(s) score the chosen completion below the rejected one" if inverted else "")
                if part))
    return out


def _read_local(path: Path) -> list[dict[str, Any]]:
    """Rows of a local .jsonl/.json (read as strict UTF-8 JSON) or .parquet file; any fault is one line."""
    kind = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise RsearchError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises many types for malformed files
            raise RsearchError(f"{path}: cannot read as parquet ({one_line(e, 200)})") from None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RsearchError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise RsearchError(f"{path}: cannot read ({one_line(e, 200)})") from None
    if not text.strip():
        raise RsearchError(f"{path}: the file is empty")
    if kind == "json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise RsearchError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        return list(rows)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RsearchError(f"{path}:{n}: not a JSON object ({e.msg})") from None
    return rows


def _find_split_file(directory: Path, split: str) -> Path | None:
    for suffix in (".jsonl", ".json", ".parquet"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def load_records(dataset: str, split: str | None) -> list[dict[str, Any]]:
    """Rows of one split: a local file, a directory of `{split}.jsonl` files, or a hub dataset id."""
    p = Path(dataset).expanduser()
    if p.is_file():
        return _read_local(p)
    if p.is_dir():
        f = _find_split_file(p, split or "train")
        if f is None:
            raise RsearchError(f"{p}: no file for split {split!r} (expected {split}.jsonl or .parquet)")
        return _read_local(f)
    if dataset.startswith((".", "/", "~")) or dataset.endswith((".jsonl", ".json", ".parquet")):
        raise RsearchError(f"dataset file not found: {dataset}")
    import datasets

    try:
        return datasets.load_dataset(dataset, split=split).to_list()
    except Exception as e:
        raise RsearchError(f"cannot load dataset {dataset!r} split {split!r}: {one_line(e, 200)}") from None


def split_by_prompt(pairs: Sequence[FeedbackPair], fractions: Sequence[float], seed: int) -> list[list[FeedbackPair]]:
    """Seeded split over prompt ids into len(fractions) parts (the last part takes the remainder)."""
    ids = sorted({p.prompt_id for p in pairs})
    random.Random(seed).shuffle(ids)
    bounds, acc = [], 0.0
    for f in fractions[:-1]:
        acc += f
        bounds.append(int(round(acc * len(ids))))
    part_of = {}
    for k, pid in enumerate(ids):
        part_of[pid] = sum(k >= b for b in bounds)
    parts: list[list[FeedbackPair]] = [[] for _ in fractions]
    for p in pairs:
        parts[part_of[p.prompt_id]].append(p)
    return parts


def load_splits(
    dataset: str, train_split: str = "train_prefs", test_split: str | None = "test_prefs",
    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
    max_train: int | None = None, max_test: int | None = None,
) -> dict[str, list[FeedbackPair]]:
    """train / val / test pairs. A single file (or test_split None) is split by prompt; else val comes from train."""
    for name, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and value < 1:
            raise RsearchError(f"{name}: must be at least 1, got {value}")
    single = Path(dataset).expanduser().is_file() or test_split is None
    if single:
        pairs = pairs_from_records(load_records(dataset, train_split), dataset)
        train, val, test = split_by_prompt(pairs, [1 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
    else:
        train_all = pairs_from_records(load_records(dataset, train_split), f"{dataset}:{train_split}")
        train, val = split_by_prompt(train_all, [1 - val_fraction, val_fraction], seed)
        test = pairs_from_records(load_records(dataset, test_split), f"{dataset}:{test_split}")
    rng = random.Random(seed)
    if max_train is not None and len(train) > max_train:
        train = rng.sample(train, max_train)
        val = val[: max(1, int(round(max_train * val_fraction / max(1e-9, 1 - val_fraction))))]
    if max_test is not None and len(test) > max_test:
        test = rng.sample(test, max_test)
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if not part:
            raise RsearchError(f"{dataset}: the {name} split is empty (too few prompts?)")
    return {"train": train, "val": val, "test": test}
