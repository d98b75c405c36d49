"""report.json's content: the subjects and settings, each stage's section (its numbers and verdicts), the
figures that exist, and the answers worded from the sections alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rsearch.record import plain
from rsearch.results import StageResult
from rsearch.study.stage import Stage, report_stages
from rsearch.subjects import Subjects

TITLE = "rsearch: do language models internally model the reward their RL fine-tuning taught them to seek?"


def build_report(*, cfg: dict, subjects: Subjects, stages: Sequence[Stage], results: Mapping[str, StageResult],
                 out: Path, seconds: float, reused: list[str]) -> dict[str, Any]:
    """One dict with every number, its verdicts, the answers and the figures (paths relative to `out`)."""
    report: dict[str, Any] = {
        "title": TITLE, "seconds": round(seconds, 1), "reused_stages": reused, "config": cfg,
        "subjects": {k: getattr(subjects, k) for k in ("pre", "post", "dataset", "rater", "beta", "organism",
                                                       "organism_size")},
    }
    figures: dict[str, str] = {}
    for stage in stages:
        if stage.report_id and stage.name in results:
            numbers = stage.numbers(results)
            if numbers is not None:
                report[stage.report_id] = plain(numbers)
        figures.update(stage.figures)
    report["figures"] = {k: v for k, v in figures.items() if (Path(out) / v).is_file()}
    report["answers"] = answers(report, stages)
    return report


def answers(report: dict[str, Any], stages: Sequence[Stage] | None = None) -> list[dict[str, str]]:
    """Each section's question, verdict and answer, in the stages' order."""
    out = []
    for stage in report_stages(report) if stages is None else stages:
        if stage.report_id and report.get(stage.report_id):
            v, text = stage.answer(report[stage.report_id])
            glance = stage.glance(report[stage.report_id])
            out.append({"id": stage.report_id, "question": stage.question, "verdict": v, "answer": text,
                        "glance": list(glance) if glance else ["—", "—", "—"]})
    return out
