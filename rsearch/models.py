"""Loading a model and its tokenizer the same way for hub ids and local directories."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import torch

from rsearch.errors import RsearchError, one_line
from rsearch.known_models import known_model_file
from rsearch.gguf_cache import cached_folder

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise RsearchError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RsearchError(f"device {device!r} requested but no CUDA GPU is available")
    return str(device)


def resolve_model_path(name_or_path: str | Path) -> str:
    """What transformers should load for a model name: a short name (rsearch.known_models) or a GGUF file, or a
    folder holding one .gguf and no config.json, becomes its cached HF folder (rsearch.gguf_cache); anything
    else (a hub id, an HF folder) comes back unchanged. Call it wherever a model name enters, so config-only
    and tokenizer-only readers see the same folder as load_model."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    gguf_file = None if local.exists() else known_model_file(name)  # a real path wins over a short name
    if local.is_file() and local.suffix.lower() == ".gguf":
        gguf_file = local
    elif local.is_dir() and not (local / "config.json").is_file():
        found = sorted(local.glob("*.gguf"))
        if len(found) > 1:
            raise RsearchError(f"{local} holds {len(found)} .gguf files; name one: {found[0]}")
        gguf_file = found[0] if found else None
    if gguf_file is None:
        return name
    return str(cached_folder(gguf_file))


def load_config(name_or_path: str | Path, revision: str | None = None, trust_remote_code: bool = False):
    """The model's transformers config alone (no weights), read where load_model reads; transformers' OSError or
    ValueError when it cannot."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_path(name_or_path), revision=revision,
                                      trust_remote_code=trust_remote_code)


def load_tokenizer(name_or_path: str | Path, revision: str | None = None, trust_remote_code: bool = False):
    """The model's tokenizer alone, as transformers gives it (load_model's also gets a pad token), read where
    load_model reads; transformers' OSError or ValueError when it cannot."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), revision=revision,
                                         trust_remote_code=trust_remote_code)


def load_model(
    name_or_path: str | Path,
    dtype: str | torch.dtype | None = "float32",
    device: str | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """Loads a causal LM and its tokenizer, in eval mode, from a hub id or a local directory.

    Args:
        name_or_path: hub id (e.g. HuggingFaceH4/zephyr-7b-beta), a local HF directory, a .gguf file (a folder
            holding one) or a short name such as smollm2-135m-instruct; see resolve_model_path.
        dtype: float32, bfloat16 or float16.
        device: "cpu", "cuda", "cuda:1" or "auto".
        revision: hub revision (branch, tag or commit); ignored for local directories and GGUF files.
        trust_remote_code: run the repository's own modelling code; off unless asked for.

    Returns:
        (model, tokenizer); the tokenizer has a pad token and `name_or_path` set.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype, device = resolve_dtype(dtype), resolve_device(device)
    name = resolve_model_path(name_or_path)
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise RsearchError(f"{local} is not a model directory (no config.json, no .gguf file)")
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    try:
        tokenizer = load_tokenizer(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
    except pickle.UnpicklingError:
        raise RsearchError(f"cannot load model {name!r}: its weights are a pickle holding more than tensors, which "
                           "rsearch never unpickles (weights_only); save them as safetensors where the file is "
                           "trusted") from None
    except (OSError, ValueError) as e:
        raise RsearchError(f"cannot load model {name!r}: {one_line(e)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


def model_fingerprint(model, name_or_path: str | None = None) -> str:
    """A content key for caches: the config plus a hash of a sample of every parameter tensor."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(str(name_or_path or getattr(model, "name_or_path", "")).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(name.encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()
