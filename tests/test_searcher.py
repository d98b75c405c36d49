"""Searcher: budget and objective, immutable results, strategies by name / instance / class, streaming to the
run directory and resuming a crashed run so that it equals an uninterrupted one."""
from __future__ import annotations

import dataclasses
import json

import pytest

from rsearch.errors import RsearchError
from rsearch.searcher import Budget, Objective, ResultLog, SearchResult, Searcher, as_budget, prefix_seed
from rsearch.strategies.beam import BeamSearch

OPTS = {"width": 2, "branching": 2, "chunk": 2, "max_tokens": 6}


@pytest.fixture(scope="module")
def searcher(tiny_search):
    _, probe_path = tiny_search
    return Searcher(probe_path, "beam", 12, options=OPTS, seed=3)


def test_budget_and_objective_validation():
    assert as_budget(5) == Budget(evaluations=5)
    assert as_budget({"seconds": 2}) == Budget(evaluations=256, seconds=2.0)
    for bad in (0, -3):
        with pytest.raises(RsearchError, match="budget must be positive"):
            as_budget(bad)
    with pytest.raises(RsearchError, match="budget must be positive"):
        Budget(evaluations=None, seconds=0)
    with pytest.raises(RsearchError, match="give evaluations or seconds"):
        Budget(evaluations=None)
    with pytest.raises(RsearchError, match="whole number"):
        as_budget(2.5)
    with pytest.raises(RsearchError, match="unknown option 'lambda'"):
        Objective.from_dict({"lambda": 1})
    o = Objective(logprob_weight=0.5, length_penalty=0.1)
    assert o.combine(1.0, -2.0, 3) == pytest.approx(1.0 - 1.0 - 0.3)
    assert Objective().combine(1.0, None, 3) == 1.0


def test_result_is_immutable_and_round_trips(searcher):
    r = searcher.optimize("what is")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.evaluations = 3
    assert r.best_text == r.top[0].text and r.best_score == r.top[0].score == max(r.best_so_far)
    assert r.evaluations == 12 == len(r.best_so_far) and r.seconds > 0
    assert r.best.prompt.startswith("what is")
    again = SearchResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and again.seed == prefix_seed(3, "what is")
    assert dataclasses.replace(r, seconds=99.0) == r  # equality ignores timing


def test_strategy_by_name_instance_or_class_agree(searcher):
    scorer = searcher.scorer
    a = Searcher(scorer, "beam", 12, options=OPTS, seed=3).optimize("hello")
    b = Searcher(scorer, BeamSearch(OPTS), 12, seed=3).optimize("hello")
    c = Searcher(scorer, BeamSearch, 12, options=OPTS, seed=3).optimize("hello")
    assert a == b == c
    with pytest.raises(RsearchError, match="instance's constructor"):
        Searcher(scorer, BeamSearch(OPTS), 12, options={"width": 3})
    with pytest.raises(RsearchError, match="unknown target"):
        Searcher(scorer, "beam", 12, target="answer")


def test_logprob_objective_is_reported(searcher):
    r = Searcher(searcher.scorer, "random", 8, options={"max_tokens": 4, "batch": 4},
                 objective={"logprob_weight": 0.5, "length_penalty": 0.01}).optimize("what is")
    for f in r.top:
        assert f.logprob is not None and f.logprob < 0
        assert f.score == pytest.approx(f.probe_score + 0.5 * f.logprob - 0.01 * len(f.ids), abs=1e-6)


def test_fan_out_pool_scores_like_local(searcher):
    class FakePool:  # the interface RayPool offers: score_rows in chunks
        calls = 0

        def score_rows(self, rows, position, spans=None):
            FakePool.calls += 1
            return searcher.scorer.score_rows(rows, position, spans)

    local = Searcher(searcher.scorer, "beam", 12, options=OPTS).optimize("hello")
    pooled = Searcher(searcher.scorer, "beam", 12, options=OPTS, pool=FakePool()).optimize("hello")
    assert pooled == local and FakePool.calls > 0


PREFIXES = ["what is", "hello", "list some", "please repeat"]


def test_resumed_run_equals_uninterrupted(searcher, tmp_path):
    full = searcher.optimize_many(PREFIXES, run_dir=tmp_path / "full")
    assert [json.loads(line)["index"] for line in (tmp_path / "full" / "results.jsonl").read_text().splitlines()] \
        == [0, 1, 2, 3]

    class Crash(Exception):
        pass

    def crash_after_two(result):
        if result.prefix == PREFIXES[1]:
            raise Crash

    run = tmp_path / "crashed"
    with pytest.raises(Crash):
        searcher.optimize_many(PREFIXES, run_dir=run, on_result=crash_after_two)
    # a torn last line, as a crash mid-write leaves it
    with open(run / "results.jsonl", "a") as f:
        f.write('{"index": 2, "prefix": "list so')
    with pytest.raises(RsearchError, match="--resume"):
        searcher.optimize_many(PREFIXES, run_dir=run)
    seen = []
    resumed = searcher.optimize_many(PREFIXES, run_dir=run, resume=True, on_result=seen.append)
    assert [r.prefix for r in seen] == PREFIXES[2:]  # only the unfinished prefixes ran
    assert resumed == full
    lines = (run / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["index"] for line in lines) == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert ResultLog(run, resume=True).done()[3] == full[3]


def test_empty_prefix_is_refused(searcher):
    with pytest.raises(RsearchError, match="empty prefix"):
        searcher.optimize("  ")
