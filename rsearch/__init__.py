"""rsearch: probes for the reward a language model learned to seek, and search for what they rate high.

The public API, imported lazily (`import rsearch` stays cheap; torch loads on first use):

    from rsearch import load_model, extract, capture           # models and activations
    from rsearch import fit_probe, save_probe, load_probe      # probes
    from rsearch import ProbeScorer, Searcher                  # scoring and search
    from rsearch import TrainProbeConfig, CompareConfig, DemoConfig, RunConfig   # the jobs' settings
    from rsearch import FeedbackConfig, build_feedback         # a feedback dataset sampled from a model
"""
from __future__ import annotations

import importlib
from typing import Any

from rsearch.errors import RsearchError

__version__ = "0.1.0"

# public name → the module that defines it
_API = {
    "load_model": "rsearch.models",
    "extract": "rsearch.activations",
    "capture": "rsearch.hooks",
    "run_forward": "rsearch.hooks",
    "encode_conversation": "rsearch.chat",
    "fit_probe": "rsearch.probes",
    "save_probe": "rsearch.probes",
    "load_probe": "rsearch.probes",
    "FitConfig": "rsearch.probes",
    "ProbeScorer": "rsearch.scorer",
    "Searcher": "rsearch.searcher",
    "Budget": "rsearch.searcher",
    "Objective": "rsearch.searcher",
    "run_many": "rsearch.distributed",
    "Config": "rsearch.config",
    "TrainProbeConfig": "rsearch.jobs.train_probe",
    "train_probes": "rsearch.jobs.train_probe",
    "CompareConfig": "rsearch.jobs.compare",
    "run_compare": "rsearch.jobs.compare",
    "RunConfig": "rsearch.jobs.run",
    "DemoConfig": "rsearch.jobs.demo_config",
    "run_demo": "rsearch.jobs.demo",
    "FeedbackConfig": "rsearch.jobs.feedback",
    "build_feedback": "rsearch.jobs.feedback",
    "OrganismConfig": "rsearch.organism.config",
    "OrganismBuildConfig": "rsearch.organism.config",
}

__all__ = ["RsearchError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
