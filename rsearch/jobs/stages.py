"""A cache of a pipeline's stages: each writes its outputs under OUT/NAME and a `stage.json` with its key; a rerun
skips a stage whose key matches.

A stage's key hashes the config it runs with (`Config.key_dict`: every field but the runtime-only ones) and its
upstream stages' keys, so changing any setting a stage reads reruns it and everything downstream of it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from rsearch.config import Config
from rsearch.io_utils import write_json
from rsearch.results import StageResult

STAGE_FORMAT = 2  # bump when what a stage writes changes, so outputs cached by an older rsearch are recomputed
R = TypeVar("R", bound=StageResult)


def stage_key(name: str, settings: dict[str, Any], upstream: dict[str, str]) -> str:
    blob = json.dumps({"stage": name, "format": STAGE_FORMAT, "settings": settings, "upstream": upstream},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings_of(*configs: Config) -> dict[str, Any]:
    """What a stage's key hashes: the key dicts of the configs it reads, by class name."""
    return {type(c).__name__: c.key_dict() for c in configs}


class StageCache:
    """Runs stages in order under `out`, reusing one whose `stage.json` holds the same key; logs progress."""

    def __init__(self, out: Path, log: logging.Logger):
        self.out, self.log = out, log
        self.keys: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.reused: list[str] = []

    def say(self, text: str) -> None:
        self.log.info(f"{time.perf_counter() - self.t0:6.1f}s  {text}")

    def key(self, name: str, settings: dict[str, Any], upstream: tuple[str, ...]) -> str:
        return stage_key(name, settings, {u: self.keys[u] for u in upstream})

    def run(self, name: str, settings: dict[str, Any], upstream: tuple[str, ...], result_type: type[R],
            fn: Callable[[Path], Any]) -> R:
        """`fn(directory)` writes `result_type.FILE` under OUT/NAME, unless a cached run with the same key did."""
        key = self.key(name, settings, upstream)
        directory = self.out / name
        result_path = directory / result_type.FILE
        marker = directory / "stage.json"
        if marker.exists():
            try:
                old = json.loads(marker.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("key") == key and result_path.is_file():
                self.keys[name] = key
                self.reused.append(name)
                self.say(f"{name}: reusing {directory} (same settings)")
                return result_type.load(result_path)
        self.say(f"{name}: running")
        t = time.perf_counter()
        fn(directory)
        seconds = time.perf_counter() - t
        write_json(marker, {"key": key, "result": result_type.FILE, "seconds": round(seconds, 2)})
        self.keys[name] = key
        self.say(f"{name}: done in {seconds:.1f}s")
        return result_type.load(result_path)
