"""Ray workers on the session's local 2-CPU cluster: the same results as in-process, fan-out scoring, and a
worker killed mid-run without losing or duplicating a result."""
from __future__ import annotations

import json

import pytest
import torch

from rsearch.distributed import RayPool, SearchSpec, run_many
from rsearch.errors import RsearchError
from rsearch.searcher import Budget

PREFIXES = ["what is", "hello", "list some", "please repeat", "the answer", "thank you"]


@pytest.fixture(scope="module")
def spec(tiny_search):
    _, probe_path = tiny_search
    return SearchSpec(probe=str(probe_path), strategy="beam", options={"width": 2, "branching": 3, "chunk": 2},
                      budget=Budget(evaluations=24), seed=5, threads=1, device="cpu")


@pytest.fixture(scope="module")
def expected(spec):
    return run_many(spec, PREFIXES, workers=0)


@pytest.fixture(scope="module")
def pool(ray_cluster, spec):
    p = RayPool(spec, 2)
    yield p
    p.shutdown()


def test_workers_match_in_process(pool, expected, tmp_path):
    got = run_many(pool.spec, PREFIXES, pool=pool, run_dir=tmp_path)
    assert got == expected
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(len(PREFIXES)))


def test_fan_out_scoring_matches_local(pool, spec):
    scorer = spec.scorer()
    target = scorer.target("prompt", "what is")
    rows = [target.row(ids) for ids in ([9], [9, 10], [12, 13, 14], [15], [16, 17], [18, 19, 20, 21], [22])]
    spans = [target.span_range(r.ids[len(target.prefix_ids):-len(target.suffix_ids)]) for r in rows]
    local = scorer.score_rows(rows, target.position, spans)
    fanned = pool.score_rows(rows, target.position, spans)
    assert torch.allclose(local.probe, fanned.probe, atol=1e-6)
    assert torch.allclose(local.logprob, fanned.logprob, atol=1e-6)
    # one search scored on the pool: the same search (batches split differently: equal up to float rounding)
    fanned_search = spec.searcher(scorer, pool=pool).optimize("hello")
    local_search = spec.searcher(scorer).optimize("hello")
    assert fanned_search.evaluations == local_search.evaluations
    assert fanned_search.best_so_far == pytest.approx(local_search.best_so_far, abs=1e-5)
    assert fanned_search.best.ids == local_search.best.ids


def test_fan_out_is_an_option_of_the_one_run_many_path(pool, expected, tmp_path):
    """fan_out=True: prefixes in turn here, each search's scoring spread over the workers; same searches."""
    got = run_many(pool.spec, PREFIXES[:2], pool=pool, fan_out=True, run_dir=tmp_path)
    for g, e in zip(got, expected[:2]):
        assert g.best.ids == e.best.ids and g.evaluations == e.evaluations
        assert g.best_so_far == pytest.approx(e.best_so_far, abs=1e-5)
    again = run_many(pool.spec, PREFIXES[:2], pool=pool, fan_out=True, run_dir=tmp_path, resume=True,
                     on_result=lambda *_: pytest.fail("a finished prefix ran again"))
    assert again == got


def test_killed_worker_loses_no_result(pool, expected, tmp_path, ray_cluster):
    ray = ray_cluster
    pids = set(ray.get([a.ping.remote() for a in pool.actors]))
    killed = []

    def kill_once(index, result):
        if not killed:  # after the first result, kill both workers: the other one is mid-search
            for a in pool.actors:
                ray.kill(a, no_restart=False)
            killed.append(index)

    got = run_many(pool.spec, PREFIXES, pool=pool, run_dir=tmp_path, on_result=kill_once)
    assert killed and got == expected
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(len(PREFIXES)))  # each once
    new_pids = set(ray.get([a.ping.remote() for a in pool.actors], timeout=120))
    assert not new_pids & pids  # the workers were restarted


def test_bad_input_before_workers(spec):
    with pytest.raises(RsearchError, match="empty prefix"):
        run_many(spec, ["hello", " "], workers=0)
    with pytest.raises(RsearchError, match="workers"):
        run_many(spec, ["hello"], workers=-1)
