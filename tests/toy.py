"""A stage and a strategy from outside the package, as a user would write them: the demo runs `ToyStage` with
`stages: [tests.toy:ToyStage]`, and `rsearch run --strategy tests.toy:Toy` runs `Toy`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rsearch.config import Config, check
from rsearch.report.numbers import fmt
from rsearch.results import StageResult, SweepResult
from rsearch.strategies import Candidate, Scored, Strategy
from rsearch.study import Stage, StudyContext


@dataclass(frozen=True)
class ToyOptions(Config):
    top: int = 2  # how many of the sweep's cells to list

    def __post_init__(self):
        check(self.top >= 1, f"top: must be at least 1, got {self.top}")


@dataclass(frozen=True)
class ToyResult(StageResult):
    FILE = "toy.json"
    n_cells: int
    top_layers: list[int]


class ToyStage(Stage):
    """Reads the sweep and lists its best cells by validation accuracy."""

    name = "toy"
    reads = ("probes",)
    Result = ToyResult
    Options = ToyOptions
    report_id = "Toy"
    question = "Which layers did the sweep rank highest?"

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> ToyResult:
        sweep: SweepResult = inputs["probes"]
        ranked = sorted((r for r in sweep.rows if r.get("val_pairwise_acc") is not None),
                        key=lambda r: -r["val_pairwise_acc"])
        result = ToyResult(n_cells=len(sweep.rows), top_layers=[int(r["layer"]) for r in ranked[:ctx.options(self).top]])
        result.save(directory)
        return result

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any]:
        toy = results["toy"]
        return {"n_cells": toy.n_cells, "top_layers": toy.top_layers}

    def answer(self, numbers: dict[str, Any]) -> tuple[str, str]:
        return "listed", f"Of {fmt(numbers['n_cells'])} cells, the top layers are " + ", ".join(
            fmt(x) for x in numbers["top_layers"]) + "."

    def table(self, numbers: dict[str, Any]):
        return ["rank", "layer"], [[fmt(i + 1), fmt(x)] for i, x in enumerate(numbers["top_layers"])]


@dataclass(frozen=True)
class ToyConfig(Config):
    width: int = 4  # spans proposed per ask

    def __post_init__(self):
        check(self.width >= 1, f"toy.width: must be at least 1, got {self.width}")


class Toy(Strategy):
    """Greedy one-token growth: extend the best span so far by each of `width` sampled tokens."""

    name = "toy"
    Config = ToyConfig

    def setup(self, context) -> None:
        self.context, self.best = context, ()

    def ask(self, n: int) -> list[Candidate]:
        drawn = self.context.sample_spans([self.best] * min(n, self.config.width), 1)
        return [self.context.candidate(ids) for ids, _ in drawn]

    def tell(self, scored: list[Scored]) -> None:
        top = max(scored, key=lambda s: s.score)
        self.best = top.candidate.ids
