"""Content stamps of what the study reads, for the subjects stage's key: a local model (a folder or a .gguf
file) or dataset by the sha256 of its files, a hub id by the revision asked for and the commit the local hub cache resolved it to.

Hashing a 7B model's 14 GB takes a while, so a file's hash is remembered under $RSEARCH_HOME by (path, size,
mtime): an unchanged file is hashed once, and a file edited in place (new size or mtime) is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rsearch.io_utils import write_json
from rsearch.known_models import known_model_file
from rsearch.paths import rsearch_home
from rsearch.subjects import Subjects

CHUNK = 1 << 22
# what a model or dataset directory's content is: weights, configs, tokenizer and data files (not READMEs, locks)
CONTENT = (".safetensors", ".bin", ".gguf", ".json", ".model", ".txt", ".jsonl", ".parquet", ".arrow", ".csv")


def file_sha256(path: Path, memo: dict[str, Any]) -> str:
    st = path.stat()
    key = str(path.resolve())
    seen = memo.get(key)
    if seen and seen["size"] == st.st_size and seen["mtime_ns"] == st.st_mtime_ns:
        return seen["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
    return memo[key]["sha256"]


def _hub_commit(repo_id: str, revision: str | None, kind: str) -> str | None:
    """The commit the local Hugging Face cache holds for `repo_id` at `revision` (None when not cached)."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" /
                                                         "huggingface") / "hub")
    ref = cache / f"{kind}s--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def stamp(name: str, revision: str | None, kind: str, memo: dict[str, Any]) -> dict[str, Any]:
    """A local file or directory by its files' hashes (a short model name by its GGUF file's); anything else as
    a hub id and its revision."""
    p = Path(name).expanduser()
    if kind == "model" and not p.exists():
        p = known_model_file(name) or p
    if p.is_file():
        return {"file": p.name, "sha256": file_sha256(p, memo)}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in CONTENT and not f.name.startswith("."))
        return {"files": {str(f.relative_to(p)): file_sha256(f, memo) for f in files}}
    return {"hub": name, "revision": revision or "main", "commit": _hub_commit(name, revision, kind)}


def content_stamps(subjects: Subjects, revision_pre: str = "", revision_post: str = "") -> dict[str, Any]:
    """{pre, post, dataset: stamp}; remembered hashes are saved back under $RSEARCH_HOME."""
    memo_path = rsearch_home() / "content_hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = dict(memo)
    out = {"pre": stamp(subjects.pre, revision_pre or None, "model", memo),
           "post": stamp(subjects.post, revision_post or None, "model", memo),
           "dataset": stamp(subjects.dataset, None, "dataset", memo)}
    if memo != before:
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # the memo only saves time: a read-only home hashes again next run
    return out
