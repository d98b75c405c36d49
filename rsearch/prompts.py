"""Prompts for a study: a seeded sample of distinct prompts from a split, a .txt file or a table."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

from rsearch.data import load_records, pairs_from_records
from rsearch.errors import RsearchError


def load_prompts(spec: str, dataset: str, n: int, seed: int) -> list[tuple[str, list[dict]]]:
    """A seeded sample of n distinct prompts: (prompt_id, messages before the assistant's turn)."""
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".txt":
        lines = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        items = [(hashlib.sha256(t.encode()).hexdigest()[:16], [{"role": "user", "content": t}]) for t in lines]
        source = str(p)
    else:
        if p.is_file():
            records, source = load_records(str(p), None), str(p)
        else:
            if not dataset:
                raise RsearchError(f"prompts {spec!r} is not a file, and no dataset is given to take split {spec!r} "
                                   "from (pass --dataset)")
            records, source = load_records(dataset, spec), f"{dataset}:{spec}"
        if not records:
            raise RsearchError(f"{source}: no rows")
        if all(c in records[0] for c in ("chosen", "rejected", "score_chosen", "score_rejected")):
            items = [(fp.prompt_id, list(fp.prompt)) for fp in pairs_from_records(records, source, as_preferences=False)]
        elif "prompt" in records[0]:
            items = [(str(r.get("prompt_id") or hashlib.sha256(str(r["prompt"]).encode()).hexdigest()[:16]),
                      [{"role": "user", "content": str(r["prompt"])}]) for r in records]
        else:
            raise RsearchError(f"{source}: needs a 'prompt' column (or the ultrafeedback schema)")
    unique = {}
    for pid, messages in items:
        unique.setdefault(pid, messages)
    ids = sorted(unique)
    random.Random(seed).shuffle(ids)
    if len(ids) < 2:
        raise RsearchError(f"{source}: only {len(ids)} distinct prompt(s); paired statistics need at least 2")
    return [(pid, unique[pid]) for pid in ids[:n]]


def messages_of(prompt: str | Sequence[dict]) -> list[dict]:
    """A prompt (the user's text, or {role, content} messages) as plain {role, content} messages."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [
        {"role": m["role"], "content": m["content"]} for m in prompt]


def user_text(messages: Sequence[dict]) -> str:
    """The last user message: what the organism's rater reads as the prompt."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else str(messages[-1]["content"])
