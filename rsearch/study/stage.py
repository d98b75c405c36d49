"""A stage of the study: what it reads, what it runs, what it returns and its part of the report.

The demo is the graph of registered stages. Each stage names the stages it reads; its cache key hashes the
configs it runs with (`settings`), its inputs' keys and, through the `subjects` stage every stage reads, content
stamps of the models and data. Its typed result (a `StageResult`) is what later stages and the report read.
Adding a stage is one module with one `Stage` subclass and `register_stage` (or, from outside the package,
`stages: [module.path:Class]` in the demo's config with its options under `stage_options: {name: {...}}`).

A stage that answers a research question gives its report section: `numbers` (report.json's entry under
`report_id`), `answer` (its verdict and wording, from those numbers alone), `table` (one header and rows,
rendered as both markdown and HTML) and `figures`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from rsearch.config import Config
from rsearch.errors import RsearchError
from rsearch.plugins import load_object
from rsearch.results import StageResult

if TYPE_CHECKING:
    from rsearch.lm import ModelCache
    from rsearch.subjects import Subjects

SUBJECTS = "subjects"  # the root stage: the models, data and rater every stage reads (no result file of its own)
Table = tuple[list[str], list[list[str]]]


@dataclass(frozen=True)
class StudyContext:
    """What a stage runs in: the demo's config, the resolved subjects, the shared model cache and the run's
    directory (a stage writes under `out / stage.name`)."""

    cfg: Any  # the demo's DemoConfig (which imports this module to check its stages)
    subjects: "Subjects"
    out: Path
    models: "ModelCache | None" = None  # None while only keys are computed

    def options(self, stage: "Stage") -> Config:
        """A plug-in stage's options: its `Options` from `stage_options[stage.name]`."""
        return stage.Options.from_dict(self.cfg.stage_options.get(stage.name), where=f"stage_options.{stage.name}")


class Stage:
    """One stage of the study. Subclasses set the class attributes and implement `run`; a stage that answers a
    question implements `numbers`, `answer` and `table` as well."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = (SUBJECTS,)
    Result: ClassVar[type[StageResult]]
    Options: ClassVar[type[Config] | None] = None     # a plug-in stage's own settings
    report_id: ClassVar[str | None] = None            # its report section's id (e.g. "Q1"), None: no section
    question: ClassVar[str] = ""
    figures: ClassVar[dict[str, str]] = {}            # figure name → path under the run's directory

    def settings(self, ctx: StudyContext) -> tuple[Config, ...]:
        """The configs this stage runs with, as its key hashes them (paths it writes left out)."""
        return (ctx.options(self),) if self.Options is not None else ()

    def run(self, ctx: StudyContext, inputs: Mapping[str, StageResult], directory: Path) -> StageResult:
        """Computes the result from `inputs` (the stages in `reads`, by name), writes it under `directory`."""
        raise NotImplementedError

    def numbers(self, results: Mapping[str, StageResult]) -> dict[str, Any] | None:
        """report.json's entry for this stage (every number its answer and table state), from every result."""
        return None

    def answer(self, numbers: dict[str, Any]) -> tuple[str, str]:
        """(verdict, wording) from `numbers` alone."""
        raise NotImplementedError

    def table(self, numbers: dict[str, Any]) -> Table:
        """(header, rows) of the report's details for this stage, from `numbers` alone."""
        raise NotImplementedError

    def glance(self, numbers: dict[str, Any]) -> tuple[str, str, str] | None:
        """(headline number, its strongest null, its power or control) for the report's first screen; None: the
        stage's row shows its verdict alone."""
        return None


_REGISTRY: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Registers a stage class under its name (usable as a decorator)."""
    check_stage_class(cls, cls.__name__)
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RsearchError(f"stage {cls.name!r} is registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def check_stage_class(cls: Any, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise RsearchError(f"stage {where}: not a subclass of rsearch.study.Stage")
    for attr in ("name", "Result"):
        if not hasattr(cls, attr):
            raise RsearchError(f"stage {where}: sets no {attr}")
    if not (isinstance(cls.Result, type) and issubclass(cls.Result, StageResult) and cls.Result.FILE):
        raise RsearchError(f"stage {where}: Result must be a StageResult with a FILE")
    if cls.Options is not None and not (isinstance(cls.Options, type) and issubclass(cls.Options, Config)):
        raise RsearchError(f"stage {where}: Options must be an rsearch.config.Config")


def built_in_stages() -> list[type[Stage]]:
    # the built-in stages import the jobs, and the jobs' configs import this module: loaded on first use
    importlib.import_module("rsearch.study.builtin")
    return list(_REGISTRY.values())


def load_stage(spec: str) -> type[Stage]:
    """A registered stage by name, or a `module.path:Class` from outside the package."""
    if ":" not in spec:
        known = {c.name: c for c in built_in_stages()}
        if spec not in known:
            raise RsearchError(f"unknown stage {spec!r}: use one of {', '.join(known)} or module.path:Class")
        return known[spec]
    cls = load_object(spec, "stage")
    check_stage_class(cls, spec)
    return cls


def study_stages(extra: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Stage]:
    """The built-in stages and `extra` ones (specs), each after the stages it reads (registration order
    otherwise), less those in `skip` and every stage that reads one of them; one-line errors for a duplicate
    name, an unknown input or a cycle."""
    classes = built_in_stages()
    for spec in extra:
        cls = load_stage(spec)
        if cls not in classes:
            classes.append(cls)
    unknown = [s for s in skip if s not in {c.name for c in classes}]
    if unknown:
        raise RsearchError(f"skip: no stage {unknown[0]!r} (stages: {', '.join(c.name for c in classes)})")
    dropped = set(skip)
    while True:
        more = {c.name for c in classes if c.name not in dropped and dropped & set(c.reads)}
        if not more:
            break
        dropped |= more
    classes = [c for c in classes if c.name not in dropped]
    names = [c.name for c in classes]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup or SUBJECTS in names:
        raise RsearchError(f"stage name {dup or SUBJECTS!r} is taken: give the stage another name")
    by_name = {c.name: c for c in classes}
    for c in classes:
        unknown = [r for r in c.reads if r != SUBJECTS and r not in by_name]
        if unknown:
            raise RsearchError(f"stage {c.name!r} reads {unknown[0]!r}, which is no stage (known: {', '.join(names)})")
    ordered: list[type[Stage]] = []
    placed = {SUBJECTS}
    while len(ordered) < len(classes):
        ready = [c for c in classes if c not in ordered and set(c.reads) <= placed]
        if not ready:
            left = [c.name for c in classes if c not in ordered]
            raise RsearchError(f"stages {', '.join(left)} read each other in a cycle")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return [c() for c in ordered]


def check_stage_options(specs: Sequence[str], options: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
    """Every extra stage loads, every skipped stage exists, and every `stage_options` entry names a stage and
    parses as its Options."""
    study_stages(specs, skip)
    stages = {s.name: s for s in study_stages(specs)}
    for name, opts in options.items():
        stage = stages.get(name)
        if stage is None or stage.Options is None:
            raise RsearchError(f"stage_options.{name}: no stage {name!r} with options is in the study")
        if not isinstance(opts, dict):
            raise RsearchError(f"stage_options.{name}: expected a mapping, got {opts!r}")
        stage.Options.from_dict(opts, where=f"stage_options.{name}")


def report_stages(report: dict[str, Any]) -> list[Stage]:
    """The stages that made a report.json (its config names the extra ones), for rendering it again."""
    cfg = report.get("config") or {}
    return study_stages(tuple(cfg.get("stages") or ()), tuple(cfg.get("skip") or ()))

