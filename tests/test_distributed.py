"""Ray workers on the session's local 2-CPU cluster: the same results as in-process, fan-out scoring, and a
worker killed mid-run without losing or duplicating a result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsearch.distributed import RayPool, SearchSpec, run_many
from rsearch.errors import RsearchError
from rsearch.searcher import Budget

PREFIXES = ["what is", "hello", "list some", "please repeat", "the answer", "thank you"]


# ----- sharded maps over rows (first in this file: the search pool below holds both of the cluster's CPUs) -----

def _without_run_details(obj, dirs: tuple[Path, ...]):
    """A result with what differs between two runs of the same computation left out (times, the output and store
    directories, the number of workers)."""
    if isinstance(obj, dict):
        return {k: _without_run_details(v, dirs) for k, v in obj.items() if k not in ("seconds", "workers")}
    if isinstance(obj, list):
        return [_without_run_details(v, dirs) for v in obj]
    if isinstance(obj, str):
        for i, d in enumerate(dirs):
            obj = obj.replace(str(d), f"DIR{i}")
    return obj


def test_train_probe_sweep_on_two_workers_matches_one_process(ray_cluster, tiny_organism, tmp_path):
    import numpy as np

    from rsearch.cli import main

    command = ["train-probe", "--organism-size", "tiny", "--sweep"]
    for workers in ("0", "2"):
        assert main(command + ["--workers", workers, "--out", str(tmp_path / f"w{workers}"),
                               "--store-dir", str(tmp_path / f"store{workers}")]) == 0
    one, two = (_without_run_details(json.loads((tmp_path / f"w{w}" / "metrics.json").read_text()),
                                     (tmp_path / f"w{w}", tmp_path / f"store{w}")) for w in ("0", "2"))
    assert len(one["rows"]) >= 6 and two == one
    # the stores hold the same activations, bit for bit
    (store0,), (store2,) = ([d for d in (tmp_path / f"store{w}").iterdir() if d.is_dir()] for w in ("0", "2"))
    arrays = sorted(p.name for p in store0.glob("*.npy"))
    assert arrays and arrays == sorted(p.name for p in store2.glob("*.npy"))
    for name in arrays:
        assert np.array_equal(np.load(store0 / name), np.load(store2 / name))


def test_sharded_sampling_and_logprobs_match_one_process_and_resume_per_shard(ray_cluster, tiny_search, tmp_path):
    from rsearch.chat import encode_conversation
    from rsearch.distributed import ShardPool, sharded_logprobs, sharded_sampler
    from rsearch.lm import sample_completions, sequence_logprobs
    from rsearch.models import load_model

    model_dir, _ = tiny_search
    model, tok = load_model(model_dir, device="cpu")
    prompts = ["what is two plus three", "list some animals", "hello", "repeat after me", "thank you", "hello world"]
    kw = dict(seed=3, max_new_tokens=8, batch_size=4, min_new_tokens=0)
    local = sample_completions(model, tok, prompts, 3, **kw)
    rows = [encode_conversation(tok, p, c.text) for p, cs in zip(prompts, local) for c in cs if c.text]
    lp_kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, batch_size=3)
    local_lp = sequence_logprobs(model, rows, **lp_kw)
    with ShardPool(2, dtype="float32", device="cpu", threads=1) as pool:
        sample = lambda: sample_completions(model, tok, prompts, 3, **kw,  # noqa: E731
                                            map_batches=sharded_sampler(pool, str(model_dir), cache_dir=tmp_path))
        assert sample() == local
        sample_shards = sorted(tmp_path.glob("shard-*.pt"))
        lp = sequence_logprobs(model, rows, **lp_kw,
                               map_batches=sharded_logprobs(pool, str(model_dir), cache_dir=tmp_path))
        assert torch.equal(lp, local_lp)
        assert len(sample_shards) >= 2 and len(list(tmp_path.glob("shard-*.pt"))) > len(sample_shards)
        # every shard kept: a rerun needs no worker at all
        actors, pool.actors = pool.actors, []
        try:
            assert sample() == local
        finally:
            pool.actors = actors
        # one shard lost: a rerun computes that one again, and the merged result is unchanged
        sample_shards[0].unlink()
        assert sample() == local and sample_shards[0].exists()



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
