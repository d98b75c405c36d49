"""Batched activation capture with early exit, and the disk-backed activation store.

The store keeps one memory-mapped `[n_rows, d_model]` array per (hook point, position), so a sweep over
every layer of 120k completions never sits in RAM. Its directory name is a content key (model weights
fingerprint, rows, hooks, positions, dtype): a store built from another model, dataset or setting is never
reused. Batches are written in a fixed order and a progress file records how many are done, so an
interrupted extraction resumes at the first unfinished batch.

A finished entry records each array's size and sha256 in complete.json; on reuse they are checked, and an entry
that fails (bytes overwritten, a file truncated or missing) is re-extracted with one log line. Activations that
are not finite (a model producing NaN or inf) stop the extraction with one line naming the hook and position.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rsearch.chat import Encoded, check_context
from rsearch.errors import RsearchError, one_line
from rsearch.hooks import HookPoint, capture, check_hooks, parse_hook, run_forward
from rsearch.integrity import damage, manifest
from rsearch.io_utils import file_lock, write_json
from rsearch.paths import rsearch_home
from rsearch.positions import Position, gather, parse_position, position_weights

log = logging.getLogger("rsearch.activations")


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor       # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq]
    position_ids: torch.Tensor    # [batch, seq], counted from each row's first real token
    left_pad: tuple[int, ...]     # pad tokens before each row
    rows: tuple[Encoded, ...]

    def model_inputs(self, device) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device),
                "position_ids": self.position_ids.to(device)}


def collate(rows: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> Batch:
    """Pads rows to one length; position ids ignore padding so a row's activations do not depend on it."""
    seq = max(len(r) for r in rows)
    ids = torch.full((len(rows), seq), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), seq), dtype=torch.long)
    pads = []
    for b, r in enumerate(rows):
        pad = seq - len(r) if padding_side == "left" else 0
        ids[b, pad:pad + len(r)] = torch.tensor(r.ids)
        mask[b, pad:pad + len(r)] = 1
        pads.append(pad)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, mask, position_ids, tuple(pads), tuple(rows))


def length_sorted_batches(rows: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (longest first, so memory peaks at once)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def capture_positions(
    model, batch: Batch, hooks: Sequence[HookPoint], positions: Sequence[Position]
) -> dict[tuple[str, str], torch.Tensor]:
    """One forward, stopped after the deepest hook: {(hook name, position spec): `[batch, d_model]` float32}."""
    weights = position_weights(positions, batch.rows, batch.input_ids.shape[1], batch.left_pad)
    with capture(model, hooks, reduce=lambda h: gather(weights, h)) as acts:
        run_forward(model, **batch.model_inputs(_device_of(model)))
    return {(h.name, p.spec): acts[h.name][i] for h in hooks for i, p in enumerate(positions)}


@torch.no_grad()
def extract(
    model, rows: Sequence[Encoded], hooks: Sequence[str | HookPoint], positions: Sequence[str | Position],
    *, pad_id: int, batch_size: int = 16, progress: bool = False,
) -> dict[tuple[str, str], torch.Tensor]:
    """Activations of every row in memory: {(hook, position): `[n_rows, d_model]` float32 (cpu)}."""
    hooks = [parse_hook(h) for h in hooks]
    positions = [parse_position(p) for p in positions]
    check_hooks(model, hooks)
    d_model = model.config.hidden_size
    out = {(h.name, p.spec): torch.empty(len(rows), d_model) for h in hooks for p in positions}
    for idx in tqdm(length_sorted_batches(rows, batch_size), desc="activations", disable=not progress):
        got = capture_positions(model, collate([rows[i] for i in idx], pad_id), hooks, positions)
        for key, value in got.items():
            out[key][idx] = check_finite(key, value.cpu(), idx)
    return out


def check_finite(key: tuple[str, str], values: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """`values` (`[batch, d_model]`, on the host), or one line naming the hook and position if any is NaN/inf."""
    bad = ~torch.isfinite(values).all(dim=-1)
    if bool(bad.any()):
        first = [int(rows[i]) for i in bad.nonzero().flatten()[:3].tolist()]
        raise RsearchError(f"activations at {key[0]} @ {key[1]} are not finite (NaN or inf) for rows {first}"
                           f"{' …' if int(bad.sum()) > 3 else ''}: the model produces NaN or inf there "
                           "(a float16 overflow, or broken weights)")
    return values


def _key_name(hook: str, position: str) -> str:
    return f"{hook}@{position}".replace(":", "_").replace("/", "_")


class ActivationStore:
    """Memory-mapped activations keyed by (hook, position); see the module docstring."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.n_rows, self.d_model = self.meta["n_rows"], self.meta["d_model"]

    @property
    def complete(self) -> bool:
        return (self.path / "complete.json").exists()

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(h, p) for h in self.meta["hooks"] for p in self.meta["positions"]]

    def array(self, hook: str | HookPoint, position: str | Position, mode: str = "r") -> np.ndarray:
        """`[n_rows, d_model]` memory map."""
        name = _key_name(parse_hook(hook).name, parse_position(position).spec)
        return np.load(self.path / f"{name}.npy", mmap_mode=mode)

    def tensor(self, hook: str | HookPoint, position: str | Position, rows: Sequence[int] | None = None) -> torch.Tensor:
        arr = self.array(hook, position)
        return torch.from_numpy(np.array(arr if rows is None else arr[np.asarray(rows)], dtype=np.float32))


def store_key(model_key: str, rows: Sequence[Encoded], hooks: Sequence[HookPoint], positions: Sequence[Position],
              dtype: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_key, "hooks": [x.name for x in hooks],
                         "positions": [p.spec for p in positions], "dtype": dtype}, sort_keys=True).encode())
    for r in rows:
        h.update(np.asarray(r.ids + (-1,) + r.completion + (r.user_end, -2), dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def build_store(
    model, rows: Sequence[Encoded], hooks: Sequence[str | HookPoint], positions: Sequence[str | Position],
    *, root: str | Path, model_key: str, pad_id: int, batch_size: int = 16, dtype: str = "float32",
    progress: bool = True, max_batches: int | None = None, capture_batches=None,
) -> ActivationStore:
    """Extracts activations into a store under `root`, resuming an interrupted extraction of the same key.

    Args:
        model: the model; the forward stops after the deepest hook.
        rows: encoded conversations.
        hooks, positions: what to capture (every hook × every position, from one forward per batch).
        root: directory holding stores; the store itself is `root/<content key>`.
        model_key: fingerprint of the model (see `models.model_fingerprint`).
        pad_id: the tokenizer's pad id.
        batch_size: rows per forward (length-sorted).
        dtype: float32 or float16 on disk.
        max_batches: stop after this many batches (to test resumption).
        capture_batches: captures elsewhere: called with the batches' row indices, yields each batch's
            `capture_positions` result in order (`rsearch.distributed.sharded_capture`); here if None.
    """
    hooks = sorted({parse_hook(h) for h in hooks})
    positions = [parse_position(p) for p in positions]
    check_hooks(model, hooks)
    if rows:
        check_context(max(len(r) for r in rows), model, "the longest row")
    path = Path(root) / store_key(model_key, rows, hooks, positions, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer per store entry; a second process with the same key waits, then finds it complete
    with file_lock(path.parent / f".{path.name}.lock", wait=True, what=f"activation store {path}"):
        return _fill_store(model, model_key, rows, hooks, positions, path, pad_id, batch_size, dtype, progress,
                           max_batches, capture_batches)


def _check_space(path: Path, needed: int) -> None:
    """Refuses, in one line, a store the disk under `path` cannot hold (its size is known before a row is read)."""
    free = shutil.disk_usage(path).free
    if needed > free:
        shutil.rmtree(path, ignore_errors=True)
        raise RsearchError(f"activation store {path}: needs {_size(needed)}, {_size(free)} free on that disk "
                           "(--store-dir or $RSEARCH_HOME elsewhere)")


def _reserve(file: Path, path: Path) -> None:
    """Allocates the memory-mapped file's blocks now: a write into a sparse page of a full disk is a SIGBUS, an
    allocation that fails is an error with a message."""
    size = os.path.getsize(file)
    try:
        with open(file, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        shutil.rmtree(path, ignore_errors=True)
        raise RsearchError(f"activation store {path}: cannot allocate {_size(size)} ({e.strerror or e})") from None


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n:,} bytes"


def _fill_store(model, model_key: str, rows: Sequence[Encoded], hooks: list[HookPoint], positions: list[Position],
                path: Path, pad_id: int, batch_size: int, dtype: str, progress: bool, max_batches: int | None,
                capture_batches=None) -> ActivationStore:
    batches = length_sorted_batches(rows, batch_size)
    d_model = model.config.hidden_size
    if (path / "meta.json").exists() and (problem := store_damage(path)):
        log.warning(f"activation store {path}: {problem}; re-extracting it")
        shutil.rmtree(path)
    if not (path / "meta.json").exists():
        path.mkdir(parents=True, exist_ok=True)
        _check_space(path, len(hooks) * len(positions) * len(rows) * d_model * np.dtype(dtype).itemsize)
        for h in hooks:
            for p in positions:
                file = path / f"{_key_name(h.name, p.spec)}.npy"
                np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=(len(rows), d_model)).flush()
                _reserve(file, path)
        write_json(path / "progress.json", {"done_batches": 0})
        write_json(path / "meta.json", {"model": model_key, "n_rows": len(rows), "d_model": d_model,
                                        "hooks": [h.name for h in hooks], "positions": [p.spec for p in positions],
                                        "dtype": dtype, "batch_size": batch_size})
    store = ActivationStore(path)
    if store.complete:
        return store
    done = json.loads((path / "progress.json").read_text())["done_batches"]
    arrays = {key: store.array(*key, mode="r+") for key in store.keys}
    todo = batches[done:] if max_batches is None else batches[done:done + max_batches]
    bar = tqdm(total=len(batches), initial=done, desc="activations", disable=not progress, unit="batch")
    try:
        write_batches(model, rows, hooks, positions, pad_id, todo, arrays,
                      on_written=lambda k: _record_progress(arrays, path, done + k), bar=bar,
                      capture_batches=capture_batches)
    finally:
        bar.close()
    if json.loads((path / "progress.json").read_text())["done_batches"] == len(batches):
        for arr in arrays.values():
            arr.flush()
        write_json(path / "complete.json", {"n_batches": len(batches),
                                            "arrays": manifest(path, [p.name for p in path.glob("*.npy")])})
    del arrays
    return ActivationStore(path)


def store_damage(path: Path) -> str | None:
    """What makes the store entry at `path` unusable, in words, or None.

    Every entry: meta.json readable and each array there with its shape and dtype (a stat and a header read).
    A finished entry also: each array's size and sha256 as complete.json recorded them. Hashing reads the whole
    entry once per reuse, about 1-2 GB/s on one core: milliseconds for CPU runs, ~10-20 s for a 20 GB sweep store,
    still small beside extracting it again. Entries finished before complete.json held the manifest get only
    the first check (trusted as before)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        shape, dtype = (meta["n_rows"], meta["d_model"]), np.dtype(meta["dtype"])
        names = [_key_name(h, p) for h in meta["hooks"] for p in meta["positions"]]
        done = json.loads((path / "complete.json").read_text()) if (path / "complete.json").exists() else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its metadata is unreadable ({one_line(e, 120)})"
    for name in names:
        try:
            arr = np.load(path / f"{name}.npy", mmap_mode="r")
        except FileNotFoundError:
            return f"{name}.npy is missing"
        except (OSError, ValueError) as e:  # a truncated file fails to map
            return f"{name}.npy is unreadable ({one_line(e, 120)})"
        if arr.shape != shape or arr.dtype != dtype:
            return f"{name}.npy holds {arr.dtype}{list(arr.shape)}, expected {dtype}{list(shape)}"
        del arr
    if isinstance(done, dict) and "arrays" in done:
        return damage(path, done["arrays"])
    return None


FLUSH_SECONDS = 5.0  # how often the writer records progress (an interrupted run redoes at most this much)
IN_FLIGHT = 3        # batches between their forward and the disk (host buffers in the ring)


def _record_progress(arrays: dict, path: Path, done_batches: int) -> None:
    """Progress is recorded only after the batches' data is on disk."""
    for arr in arrays.values():
        arr.flush()
    write_json(path / "progress.json", {"done_batches": done_batches})


def write_batches(model, rows: Sequence[Encoded], hooks: Sequence[HookPoint], positions: Sequence[Position],
                  pad_id: int, batches: Sequence[Sequence[int]], arrays: dict, *, on_written, bar=None,
                  capture_batches=None) -> None:
    """Captures each batch and writes its rows of every `[n_rows, d_model]` array, writes overlapped with compute.

    The forwards run here; a writer thread copies finished batches into `arrays` in order and calls
    `on_written(k)` (k batches written) every `FLUSH_SECONDS` and at the end. On CUDA the activations leave the
    GPU by non-blocking copies into a ring of pinned host buffers, so no batch waits for the GPU here; only the
    writer waits, for the batch it writes. `capture_batches(batches)`, if given, yields the batches' captures
    instead (computed elsewhere).
    """
    if not batches:
        return
    cuda = _device_of(model).type == "cuda"
    first = next(iter(arrays.values()))
    dtype = torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype
    width = max(len(idx) for idx in batches)
    free: queue.Queue = queue.Queue()
    for _ in range(IN_FLIGHT):
        free.put({key: torch.empty(width, first.shape[1], dtype=dtype, pin_memory=cuda) for key in arrays})
    work: queue.Queue = queue.Queue()
    failed: list[BaseException] = []

    def writer() -> None:
        written, last = 0, time.monotonic()
        try:
            while (item := work.get()) is not None:
                idx, buf, ready = item
                if ready is not None:
                    ready.synchronize()
                order = np.asarray(idx)
                for key, arr in arrays.items():
                    arr[order] = check_finite(key, buf[key][:len(idx)], idx).numpy()
                free.put(buf)
                written += 1
                if bar is not None:
                    bar.update(1)
                if time.monotonic() - last >= FLUSH_SECONDS:
                    on_written(written)
                    last = time.monotonic()
            on_written(written)
        except BaseException as e:  # surfaced in the calling thread
            failed.append(e)
            free.put(None)

    thread = threading.Thread(target=writer, name="activation-writer", daemon=True)
    thread.start()
    captured = (capture_batches(batches) if capture_batches is not None else
                (capture_positions(model, collate([rows[i] for i in idx], pad_id), hooks, positions) for idx in batches))
    try:
        for idx, got in zip(batches, captured):
            buf = free.get()
            if buf is None:
                break
            for key, value in got.items():  # [batch, d_model]
                buf[key][:len(idx)].copy_(value.to(dtype), non_blocking=value.is_cuda)
            ready = None
            if cuda and any(v.is_cuda for v in got.values()):
                ready = torch.cuda.Event()
                ready.record()
            work.put((idx, buf, ready))
    finally:
        work.put(None)
        thread.join()
    if failed:
        raise failed[0]


def default_store_root() -> Path:
    return rsearch_home() / "activations"
