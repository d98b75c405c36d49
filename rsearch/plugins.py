"""`module.path:attr` specs: the one way raters, strategies and stages come from outside the package."""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from rsearch.errors import RsearchError

SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_spec(text: str) -> bool:
    """Whether `text` has the `module.path:attr` shape (it may still fail to import)."""
    return bool(SPEC.match(text))


def load_object(spec: str, what: str) -> Any:
    """The object `module.path:attr` names; one-line RsearchErrors naming `what` (e.g. "rater") otherwise.
    Importing the module runs its code: a spec is code the user chose to run, like a `--config` recipe is not.
    The current directory is searched last, as `python -m` would search it first: `rsearch run --strategy
    mine:Mine` finds mine.py where it is run, without shadowing an installed module."""
    if not is_spec(spec):
        raise RsearchError(f"{what} {spec!r}: expected module.path:name")
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RsearchError(f"{what} {spec}: cannot import {module_name} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RsearchError(f"{what} {spec}: {module_name} has no {attr!r}") from None
