"""GGUF files as ordinary model folders: dequantized to float32 once, saved under $RSEARCH_HOME/gguf/, reused.

The cache is keyed by the sha256 of the file's content, so a renamed or copied file reuses its folder and a
changed one gets a new one. Hashing a large file takes seconds, so the hash is remembered by (path, size,
mtime_ns). The folder is written beside its final place and renamed there, so a reader never sees half of it.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rsearch.errors import RsearchError, one_line
from rsearch.io_utils import file_lock, write_json
from rsearch.paths import rsearch_home

log = logging.getLogger("rsearch.gguf")

EXTRA_HINT = "pip install 'rsearch[gguf]'"
SOURCE_NAME = "rsearch_gguf_source.json"  # written last in a cached folder: its presence means complete


def gguf_root() -> Path:
    return rsearch_home() / "gguf"


def require_gguf_support() -> None:
    """The packages transformers' GGUF reader needs, or one line naming the extra that installs them."""
    for module in ("gguf", "accelerate"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise RsearchError(f"loading a .gguf model needs the {module!r} package: {EXTRA_HINT}") from None


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of the file's content, remembered by (path, size, mtime_ns) in $RSEARCH_HOME/gguf/hashes.json."""
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index = gguf_root() / "hashes.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(stamp), str):
        return known[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    known = known if isinstance(known, dict) else {}
    known[stamp] = digest
    try:  # a lost entry only costs a re-hash, so a concurrent writer may win
        write_json(index, known)
    except OSError as e:
        log.debug(f"cannot remember the hash of {path}: {one_line(e)}")
    return digest


def cached_folder(path: str | Path) -> Path:
    """The HF model folder for the GGUF file at `path`, dequantizing it on first use."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RsearchError(f"{path}: no such GGUF file")
    require_gguf_support()
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise RsearchError(f"cannot read {path}: {one_line(e)}") from None
    root = gguf_root()
    folder = root / digest[:32]  # content alone: a renamed or copied file finds the same folder
    if (folder / SOURCE_NAME).is_file():
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RsearchError(f"cannot create the GGUF cache {root}: {one_line(e)}") from None
    with file_lock(root / f".{folder.name}.lock", wait=True, what=f"the GGUF cache of {path.name}"):
        if (folder / SOURCE_NAME).is_file():  # another process finished it while this one waited
            return folder
        _dequantize(path, folder, digest)
    return folder


def _dequantize(path: Path, folder: Path, digest: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info(f"dequantizing {path.name} once into {folder}")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as e:
        raise RsearchError(f"cannot write in the GGUF cache {folder.parent}: {one_line(e)}") from None
    try:
        try:
            kwargs = dict(gguf_file=path.name)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs,
                                                         **_dequantize_kwargs())
        except ImportError as e:
            raise RsearchError(f"cannot load {path.name}: {one_line(e)} ({EXTRA_HINT})") from None
        except Exception as e:  # a corrupt or unsupported file fails anywhere in the reader, in any exception type
            raise RsearchError(f"cannot read GGUF file {path}: {one_line(e)}") from None
        # a plain float model from here on: what remains of the GGUF quantizer would refuse save_pretrained
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / SOURCE_NAME, {"gguf": str(path.resolve()), "sha256": digest,
                                           "size": path.stat().st_size})
            if folder.exists():  # an incomplete folder left by an older layout: replace it
                shutil.rmtree(folder)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as the rest of $RSEARCH_HOME
            os.replace(tmp, folder)
        except OSError as e:
            raise RsearchError(f"cannot write the dequantized {path.name} under {folder.parent}: {one_line(e)} "
                               "(a float32 copy takes about 4 bytes per parameter; set RSEARCH_HOME elsewhere)"
                               ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _dequantize_kwargs() -> dict:
    """Newer transformers (5.x) may keep GGUF weights packed when kernels are installed; ask for plain floats.
    Older ones always dequantize and have no GgufConfig."""
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}
