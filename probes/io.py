"""Probe files: tensors plus self-describing metadata, as .safetensors or .pt, never unpickling objects.

Both formats carry the same header, a str -> str mapping: every metadata value JSON-encoded under its
own key, plus two reserved keys, FORMAT_KEY (the format tag) and CONFIG_KEY (the probe's constructor
arguments as JSON). In .safetensors the header is the file's metadata; a .pt file is
torch.save({"header": header, "tensors": state_dict}), which torch.load(weights_only=True) reads.
"""
from __future__ import annotations

import datetime as dt
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from rsearch.probes.models import Probe, make_probe
from rsearch.errors import RsearchError, one_line
from rsearch.io_utils import atomic_path
from rsearch.hooks import parse_hook
from rsearch.positions import parse_position
from rsearch import __version__

FORMAT_KEY = "__rsearch_probe__"
FORMAT_TAG = "rsearch.probe/1"
CONFIG_KEY = "__probe_config__"
SUFFIXES = (".safetensors", ".pt", ".pth")


def save_probe(path: str | Path, probe: Probe, metadata: dict[str, Any]) -> None:
    """Writes the probe and its metadata atomically (a temp file renamed into place).

    Args:
        path: destination ending in .safetensors or .pt (.pth).
        probe: the probe; its state dict (standardization included) is saved as float tensors.
        metadata: JSON-serializable values: model, revision, hook, position, objective, metrics, dataset,
            rsearch_version…; `kind` and `d_model` are set from the probe, `created` (ISO, UTC) and
            `rsearch_version` are filled when absent.

    Raises:
        RsearchError: one line naming the file, for a probe with a non-finite weight or standardization
            (nothing is written).
    """
    path = Path(path)
    suffix = _suffix(path)
    header = _header(probe, metadata)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in probe.state_dict().items()}
    for name, t in tensors.items():  # a probe with NaN weights or standardization is never written
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RsearchError(f"{path}: refusing to write a probe whose {name!r} is not finite (NaN or inf); "
                               "the fit diverged or its training data holds non-finite activations")
    with atomic_path(path) as tmp:
        if suffix == ".safetensors":
            save_file(tensors, str(tmp), metadata=header)
        else:
            torch.save({"header": header, "tensors": tensors}, tmp)


def load_probe(path: str | Path) -> tuple[Probe, dict[str, Any]]:
    """Reads a probe file written by save_probe.

    Args:
        path: a .safetensors or .pt (.pth) probe file.

    Returns:
        (probe in eval mode on CPU, metadata with JSON values decoded).

    Raises:
        RsearchError: one line, for a missing file, an unknown suffix, a corrupt file or one that is not
            a probe. A .pt file is read with torch.load(weights_only=True), so no object is unpickled.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise RsearchError(f"probe file not found: {path}")
    header, tensors = _read_safetensors(path) if suffix == ".safetensors" else _read_pt(path)
    if header.get(FORMAT_KEY) != FORMAT_TAG:
        raise RsearchError(f"{path}: not an rsearch probe file (no {FORMAT_KEY!r} tag)")
    try:
        config = json.loads(header[CONFIG_KEY])
        metadata = {k: json.loads(v) for k, v in header.items() if k not in (FORMAT_KEY, CONFIG_KEY)}
        kind, d_model = config.pop("kind"), int(config.pop("d_model"))
    except (KeyError, TypeError, ValueError) as e:
        raise RsearchError(f"{path}: corrupt probe header ({one_line(e, 200)})") from None
    if d_model < 1:
        raise RsearchError(f"{path}: corrupt probe header (d_model {d_model})")
    _check_metadata(path, metadata, d_model)
    try:
        probe = make_probe(kind, d_model, **config)
    except (TypeError, ValueError, RsearchError) as e:
        raise RsearchError(f"{path}: corrupt probe header ({one_line(e, 200)})") from None
    try:
        probe.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise RsearchError(f"{path}: tensors do not match a {kind} probe of d_model {d_model} "
                           f"({one_line(e, 200)})") from None
    return probe.eval(), metadata


# metadata keys readers rely on, and the JSON type each must have (others are free-form)
_STRING_KEYS = ("model", "hook", "position", "objective", "kind", "dataset", "fitter")


def _check_metadata(path: Path, metadata: dict[str, Any], d_model: int) -> None:
    """Refuses metadata a reader would trip over later: wrong types, a d_model that contradicts the tensors,
    a hook or position that does not parse."""
    for key in _STRING_KEYS:
        if key in metadata and not isinstance(metadata[key], str):
            raise RsearchError(f"{path}: probe metadata {key!r} must be a string, got {metadata[key]!r}")
    if "revision" in metadata and not isinstance(metadata["revision"], (str, type(None))):
        raise RsearchError(f"{path}: probe metadata 'revision' must be a string, got {metadata['revision']!r}")
    if "d_model" in metadata:
        d = metadata["d_model"]
        if isinstance(d, bool) or not isinstance(d, int) or d != d_model:
            raise RsearchError(f"{path}: probe metadata 'd_model' is {d!r}, but the probe's tensors have "
                               f"d_model {d_model}")
    try:
        if "hook" in metadata:
            parse_hook(metadata["hook"])
        if "position" in metadata:
            parse_position(metadata["position"])
    except RsearchError as e:
        raise RsearchError(f"{path}: probe metadata: {one_line(e)}") from None


def _header(probe: Probe, metadata: dict[str, Any]) -> dict[str, str]:
    meta = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rsearch_version": __version__, **metadata, "kind": probe.kind, "d_model": probe.d_model}
    header = {FORMAT_KEY: FORMAT_TAG, CONFIG_KEY: json.dumps(probe.config(), sort_keys=True)}
    for key, value in meta.items():
        if not isinstance(key, str) or key in header:
            raise RsearchError(f"probe metadata key {key!r} is not allowed")
        try:
            header[key] = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise RsearchError(f"probe metadata {key!r} is not JSON-serializable ({one_line(e, 200)})") from None
    return header


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            if header.get(FORMAT_KEY) != FORMAT_TAG:
                return header, {}
            return header, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every kind of bad file
        raise RsearchError(f"{path}: not a readable safetensors file ({one_line(e, 200)})") from None


def _read_pt(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing: one line only
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RsearchError(f"{path}: refused: the file holds pickled objects, not only tensors, and rsearch never "
                           f"unpickles them ({_unpickler_reason(e)})") from None
    except Exception as e:  # RuntimeError, EOFError… for junk
        raise RsearchError(f"{path}: not a probe file torch.load(weights_only=True) can read "
                           f"({one_line(e, 200)})") from None
    if not (isinstance(obj, dict) and isinstance(obj.get("header"), dict)
            and isinstance(obj.get("tensors"), dict)):
        raise RsearchError(f"{path}: not an rsearch probe file (expected a dict with 'header' and 'tensors')")
    header, tensors = obj["header"], obj["tensors"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in header.items()):
        raise RsearchError(f"{path}: corrupt probe header (values must be strings)")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in tensors.items()):
        raise RsearchError(f"{path}: corrupt probe file (non-tensor entries)")
    return header, tensors


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RsearchError(f"{path}: unknown probe file suffix {path.suffix!r} (use .safetensors or .pt)")
    return suffix


def _unpickler_reason(e: BaseException) -> str:
    """torch's refusal names the offending global or opcode after 'WeightsUnpickler error:', lines below its
    first (which only advises weights_only=False, never the right advice for a file from elsewhere)."""
    text = str(e)
    _, found, rest = text.partition("WeightsUnpickler error:")
    reason = one_line(rest, 160) if found and rest.strip() else ""
    return reason if reason != "error" else one_line(e, 160)
