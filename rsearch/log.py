"""Logging: every job logs through `logging.getLogger("rsearch....")`; the CLI's -v/-q sets the level.

Progress bars (tqdm) are shown when the `rsearch` logger would print INFO: on the command line by default,
off under -q, and off in library use unless the caller configures logging.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

ROOT = "rsearch"


def configure(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings only, no progress bars), 0 progress lines, 1 debug."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_progress() -> bool:
    """Whether jobs should draw progress bars (the `rsearch` logger prints INFO)."""
    return logging.getLogger(ROOT).isEnabledFor(logging.INFO)


def add_verbosity(parser: argparse.ArgumentParser, default: Any = 0) -> None:
    """-v / -q on a parser (the top-level command; subcommands accept them too, after their name)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="debug output")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="warnings and errors only, no progress bars")
