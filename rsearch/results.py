"""Typed results of the study's stages, as written to disk (metrics.json, compare.json, source.json,
direction.json, search.json) and read back by the next stage and the report.

Each is a frozen dataclass whose fields are exactly the keys of its JSON file: `from_dict` fails at once, with
one line naming the file and the key, when a key is missing or unknown, so a stage and its readers cannot drift
apart. Tables inside (rows, per-strategy entries) stay plain mappings.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rsearch.errors import RsearchError
from rsearch.io_utils import write_json

R = TypeVar("R", bound="StageResult")


@dataclass(frozen=True)
class StageResult:
    FILE = ""  # the file name a stage writes it to

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], *, where: str = "") -> R:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            what = f"missing key {missing[0]!r}" if missing else f"unknown key {unknown[0]!r}"
            raise RsearchError(f"{where or cls.FILE}: {what} for {cls.__name__} (rerun the stage that wrote it)")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        p = Path(path)
        return cls.from_dict(json.loads(p.read_text()), where=str(p))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def save(self, directory: str | Path) -> str:
        """Writes FILE under `directory` atomically; returns the file's name."""
        write_json(Path(directory) / self.FILE, self.to_dict())
        return self.FILE


@dataclass(frozen=True)
class SweepResult(StageResult):
    """train-probe's metrics.json: every fitted probe's row and the best by validation."""

    FILE = "metrics.json"
    config: dict[str, Any]
    n_pairs: dict[str, int]
    best: dict[str, Any]
    best_probe: str
    rows: list[dict[str, Any]]
    baselines: dict[str, Any]   # the test pairs' baselines ("pairs") and the user_end target's ("user_end")

    @property
    def layers(self) -> list[int]:
        return sorted({int(r["layer"]) for r in self.rows})

    @property
    def hook_kind(self) -> str:
        return self.config["hook_kind"]

    def user_end_probe(self) -> dict[str, Any]:
        """The best prompt-only probe (user_end), chosen by validation Pearson r."""
        rows = [r for r in self.rows if r["position"] == "user_end"]
        if not rows:
            raise RsearchError("the sweep has no user_end probe to search with")
        return max(rows, key=lambda r: (r.get("val_pearson") if r.get("val_pearson") is not None else float("-inf")))


@dataclass(frozen=True)
class ComparisonResult(StageResult):
    """compare's compare.json: paired statistics of pre- vs post-RL completions over prompts."""

    FILE = "compare.json"
    n_prompts: int
    n_completions: dict[str, int]
    n_empty: dict[str, int]
    test: str
    ci: str
    metrics: dict[str, dict[str, Any]]
    correlations: dict[str, dict[str, Any]]
    config: dict[str, Any]
    pre: str
    post: str
    dataset: str
    prompts: str
    beta: float
    beta_source: str
    rater: str | None
    k: int
    probe: str
    probe_meta: dict[str, Any]
    table: str
    seconds: float
    figures: dict[str, str]


@dataclass(frozen=True)
class SourceResult(StageResult):
    """The source probe: which model wrote a completion, per layer × position, split by prompt."""

    FILE = "source.json"
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    length_control: dict[str, Any]
    n: dict[str, int]
    n_prompts: dict[str, int]
    split: str
    objective: str
    reader: str
    ci: str


@dataclass(frozen=True)
class DirectionResult(StageResult):
    """Per layer, the RL update's cosine with the reward probe's direction against activation-shaped random
    directions and shuffled-label probes; and the probe's reading of what each model writes."""

    FILE = "direction.json"
    position: str
    n_random: int
    n_shuffled: int
    rows: list[dict[str, Any]]
    inputs: str


@dataclass(frozen=True)
class SearchOutcome(StageResult):
    """Every strategy's found prompts, checked against the unsearched prefixes and random prompts."""

    FILE = "search.json"
    probe: str
    probe_layer: int
    probe_position: str
    probe_test_pearson: float | None
    budget: int
    prefixes: list[str]
    check_samples: int
    rater: str | None
    target: str
    baseline_prefix: list[dict[str, Any]]
    baseline_random: list[dict[str, Any]]
    baseline_prefix_mean_true_reward: float | None
    baseline_random_mean_true_reward: float | None
    baseline_prefix_mean_probe_score: float | None
    baseline_random_mean_probe_score: float | None
    strategies: list[dict[str, Any]]
    unit: str


@dataclass(frozen=True)
class SteerResult(StageResult):
    """`rsearch steer`'s steer.json: the steering dose–response per model and metric, and the patching effects."""

    FILE = "steer.json"
    config: dict[str, Any]
    pre: str
    post: str
    dataset: str
    rater: str | None
    beta: float
    probe: str
    probe_meta: dict[str, Any]
    hook: str
    positions_from: str
    alphas: list[float]
    models: list[str]
    n_prompts: int
    k: int
    n_random: int
    fit_pairs: int
    scale: dict[str, float]
    metrics: dict[str, dict[str, Any]]
    patching: dict[str, Any] | None
    table: str
    figures: dict[str, str]
    seconds: float
