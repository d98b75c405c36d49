"""Where rsearch keeps its caches: $RSEARCH_HOME, or ~/.cache/rsearch."""
from __future__ import annotations

import os
from pathlib import Path


def rsearch_home() -> Path:
    return Path(os.environ.get("RSEARCH_HOME") or Path.home() / ".cache" / "rsearch").expanduser()
