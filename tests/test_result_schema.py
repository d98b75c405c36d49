"""The stage → report contract is typed: every stage's result loads strictly from its JSON (the fixtures are one
tiny demo's outputs), round-trips to the same JSON, and the whole report is built and rendered from them — so a
field renamed in rsearch/results.py, in a writer or in a reader fails here, in milliseconds.

The fixtures: `python tests/test_result_schema.py RUN_DIR` copies a demo run's stage files here (long lists cut
to three items); rerun it after a stage writes a new field.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from rsearch.errors import RsearchError
from rsearch.report.build import build_report
from rsearch.report.render import render_html, render_markdown
from rsearch.results import (ComparisonResult, DirectionResult, SearchOutcome, SourceResult, SteerResult,
                             SweepResult)
from rsearch.study.stage import study_stages
from rsearch.subjects import Subjects

HERE = Path(__file__).parent / "data" / "results"
FILES = {"probes": ("probes/metrics.json", SweepResult), "compare": ("compare/compare.json", ComparisonResult),
         "source": ("source/source.json", SourceResult), "direction": ("direction/direction.json", DirectionResult),
         "search": ("search/search.json", SearchOutcome), "causal": ("causal/steer.json", SteerResult)}


def raw(stage: str) -> dict:
    return json.loads((HERE / f"{stage}.json").read_text())


def results() -> dict:
    return {stage: cls.from_dict(raw(stage), where=f"{stage}.json") for stage, (_, cls) in FILES.items()}


@pytest.mark.parametrize("stage", FILES)
def test_each_result_loads_strictly_and_round_trips(stage):
    result = FILES[stage][1].from_dict(raw(stage))
    assert json.loads(json.dumps(result.to_dict())) == raw(stage)


def test_the_report_is_built_and_rendered_from_the_typed_results(tmp_path):
    subjects = Subjects(pre="pre", post="post", dataset="data", rater="organism", beta=0.1, beta_source="organism card",
                        organism=True, organism_size="tiny")
    stages = study_stages()
    report = build_report(cfg={"stages": []}, subjects=subjects, stages=stages, results=results(), out=tmp_path,
                          seconds=1.0, reused=[])
    assert [a["id"] for a in report["answers"]] == ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"]
    json.dumps(report)  # plain JSON all the way down
    md = render_markdown(report)
    assert all(f"## {q}: details" in md for q in ("Q1", "Q2", "Q3", "Q4", "Q5", "Q6"))
    assert "<h2>Q6: details</h2>" in render_html(report, tmp_path)


def test_a_renamed_or_mistyped_key_is_refused_with_its_path():
    data = raw("source")
    data["rows"][0]["test"]["acc"] = data["rows"][0]["test"].pop("accuracy")
    with pytest.raises(RsearchError, match=r"source\.json\.rows\[0\]\.test: unknown key 'acc' for SourceAccuracy"):
        SourceResult.from_dict(data, where="source.json")
    data = raw("compare")
    data["metrics"]["probe_score"]["ci_lo"] = "low"
    with pytest.raises(RsearchError, match=r"metrics\.probe_score\.ci_lo: expected a number"):
        ComparisonResult.from_dict(data)
    data = raw("compare")
    del data["n_prompts"]
    with pytest.raises(RsearchError, match="missing key 'n_prompts'"):
        ComparisonResult.from_dict(data)


def test_a_reader_of_a_field_that_is_not_there_fails_at_once():
    source = results()["source"]
    assert source.best["test"]["accuracy"] == raw("source")["best"]["test"]["accuracy"]
    with pytest.raises(KeyError):
        source.best["test"]["acc"]
    # a field left out of the JSON reads as absent, as the mapping it was
    direction = raw("direction")
    row = dict(direction["rows"][0])
    row.pop("writes_std_diff", None)
    r = DirectionResult.from_dict({**direction, "rows": [row]}).rows[0]
    assert "writes_std_diff" not in r and r.get("writes_std_diff") is None and "writes_std_diff" not in r.to_dict()


def test_a_directly_built_result_is_checked_like_a_loaded_one():
    data = raw("direction")
    built = DirectionResult(**{**data, "rows": copy.deepcopy(data["rows"])})
    assert built == DirectionResult.from_dict(data) and type(built.rows[0]).__name__ == "DirectionRow"
    with pytest.raises(RsearchError, match="unknown key 'cosine'"):
        DirectionResult(**{**data, "rows": [{"cosine": 0.1}]})


def _cut(obj):
    """Long lists (best-so-far curves, sampled rewards) cut to three items, so the fixtures stay small."""
    if isinstance(obj, dict):
        return {k: _cut(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cut(v) for v in (obj[:3] if len(obj) > 3 and not isinstance(obj[0], dict) else obj)]
    return obj


if __name__ == "__main__":
    run = Path(sys.argv[1])
    HERE.mkdir(parents=True, exist_ok=True)
    for stage, (name, _) in FILES.items():
        data = _cut(json.loads((run / name).read_text()))
        (HERE / f"{stage}.json").write_text(json.dumps(data, indent=1) + "\n")
