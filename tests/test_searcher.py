"""Searcher: budget and objective (the fluency term on by default), immutable results with their compute and
exploitation-gap fields, strategies by name / instance / class, streaming to the run directory and resuming a
crashed run so that it equals an uninterrupted one; on the tiny organism, GCG's prompts under the default
objective stay near the model's own prompts in NLL."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rsearch.errors import RsearchError
from rsearch.searcher import (DEFAULT_LOGPROB_WEIGHT, Budget, Objective, ResultLog, SearchResult, Searcher,
                              as_budget, prefix_seed)
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
    with pytest.raises(RsearchError, match="give evaluations, forwards or seconds"):
        Budget(evaluations=None)
    with pytest.raises(RsearchError, match="budget must be positive"):
        Budget(forwards=0)
    assert as_budget({"forwards": 50, "evaluations": None}) == Budget(evaluations=None, forwards=50.0)
    with pytest.raises(RsearchError, match="whole number"):
        as_budget(2.5)
    with pytest.raises(RsearchError, match="unknown option 'lambda'"):
        Objective.from_dict({"lambda": 1})
    o = Objective(logprob_weight=0.5, length_penalty=0.1)
    assert o.combine(1.0, -2.0, 3) == pytest.approx(1.0 - 1.0 - 0.3)
    assert Objective().combine(1.0, None, 3) == 1.0


def test_fluency_term_is_on_by_default(searcher):
    """λ > 0 unless asked otherwise, in the API and on the command line, and in effect in every score."""
    from rsearch.jobs.run import RunConfig

    assert Objective().logprob_weight == DEFAULT_LOGPROB_WEIGHT > 0
    assert RunConfig().logprob_weight == DEFAULT_LOGPROB_WEIGHT
    assert searcher.objective.logprob_weight == DEFAULT_LOGPROB_WEIGHT
    r = searcher.optimize("please repeat")
    for f in r.top:
        assert f.logprob is not None and f.logprob < 0
        assert f.score == pytest.approx(f.probe_score + DEFAULT_LOGPROB_WEIGHT * f.logprob, abs=1e-6)
    off = Searcher(searcher.scorer, "beam", 12, options=OPTS, seed=3, objective={"logprob_weight": 0}).optimize(
        "please repeat")
    assert all(f.logprob is None and f.score == f.probe_score for f in off.top)


def test_result_reports_compute_and_exploitation_gap(searcher):
    r = searcher.optimize("what is")
    assert r.compute["scored"] == r.evaluations == 12
    assert r.compute["sampled"] > 0 and r.compute["gradient"] == 0  # beam's sampling is charged, not free
    assert r.forwards == pytest.approx(sum(r.compute.values()))
    bare = searcher.scorer.score_texts(["what is"], position="user_end")[0]
    assert r.prefix_probe_score == pytest.approx(float(bare), abs=1e-5)
    assert r.probe_gain == pytest.approx(r.best.probe_score - r.prefix_probe_score)
    assert r.true_gain is None and r.exploitation_gap is None  # no truth yet
    checked = dataclasses.replace(r, true_reward=5.0, prefix_true_reward=4.5, true_answers=3)
    assert checked.exploitation_gap == pytest.approx(r.probe_gain - 0.5)
    d = json.loads(json.dumps(checked.to_dict()))
    assert d["exploitation_gap"] == pytest.approx(checked.exploitation_gap) and d["forwards"] == r.forwards
    assert SearchResult.from_dict(d) == checked


def test_with_truth_rates_answers_to_the_best_prompt_and_the_bare_prefix(searcher):
    """A rater that credits only prompts longer than the bare prefix: the true gain is exactly 1."""
    from rsearch.exploitation import with_truth

    results = [searcher.optimize(p) for p in ("what is", "hello")]
    rated = []

    def rate(prompt, answer):
        rated.append(prompt)
        return 1.0 if prompt not in ("what is", "hello") else 0.0

    checked = with_truth(searcher.scorer, results, rate, answers=3, seed=0, max_new_tokens=4)
    assert len(rated) == 2 * 2 * 3
    for r, c in zip(results, checked):
        assert (c.true_reward, c.prefix_true_reward, c.true_answers) == (1.0, 0.0, 3)
        assert c.exploitation_gap == pytest.approx(r.probe_gain - 1.0)


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


def test_damaged_lines_mid_file_are_skipped_counted_and_searched_again(searcher, tmp_path, caplog):
    full = searcher.optimize_many(PREFIXES, run_dir=tmp_path / "full")
    run = tmp_path / "damaged"
    searcher.optimize_many(PREFIXES, run_dir=run)
    lines = (run / "results.jsonl").read_text().splitlines()
    lines[1] = "garbage {"
    lines[2] = '{"index": 2, "prefix": "list some", "result": {"nonsense": 1}}'  # JSON, but no result
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    seen = []
    with caplog.at_level("WARNING"):
        resumed = searcher.optimize_many(PREFIXES, run_dir=run, resume=True, on_result=seen.append)
    assert "2 damaged line(s) skipped (line 2, 3)" in caplog.text
    assert sorted(r.prefix for r in seen) == sorted(PREFIXES[1:3]) and resumed == full
    indices = [json.loads(line)["index"] for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(indices) == [0, 1, 2, 3]


def test_empty_prefix_is_refused(searcher):
    with pytest.raises(RsearchError, match="empty prefix"):
        searcher.optimize("  ")


def _user_end_probe(org):
    """A ridge-regression probe of the rating at user_end of the organism's post-RL model (the search's
    objective in the demo), fitted in closed form on the training prompts."""
    from rsearch.activations import extract
    from rsearch.chat import encode_conversation
    from rsearch.models import load_model
    from rsearch.probes import make_probe

    import torch

    model, tok = load_model(str(org.post_dir), "float32", "cpu")
    rows = [json.loads(line) for line in Path(org.train_prefs).read_text().splitlines() if line.strip()][:400]
    hook = f"blocks.{model.config.num_hidden_layers - 1}.hook_resid_pre"
    x = extract(model, [encode_conversation(tok, r["prompt"]) for r in rows], [hook], ["user_end"],
                pad_id=tok.pad_token_id)[(hook, "user_end")]                               # [n, d_model]
    y = torch.tensor([(r["score_chosen"] + r["score_rejected"]) / 2 for r in rows])     # [n]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.linalg.solve(z.T @ z + 10.0 * torch.eye(z.shape[1]), z.T @ (y - y.mean()))
    probe = make_probe("linear", x.shape[1])
    with torch.no_grad():
        probe.set_standardization(mean, std)
        probe.weight.copy_(w)
        probe.bias.fill_(float(y.mean()))
    return probe, model, tok, hook


def test_default_objective_keeps_gcg_prompts_in_the_models_distribution(tiny_organism):
    """With the default objective, GCG's prompts on the tiny organism come within issue 12's bar of 1.5× the
    organism's test prompts' mean token NLL under the post-RL model; without the fluency term they are word salad.
    (Before GCG's initial span ended where the model ends the user's turn, a span drawn to its full length past
    that end kept the default at 1.65× on organism v2, whatever λ.)"""
    import statistics

    from rsearch.exploitation import prompt_nll
    from rsearch.scorer import ProbeScorer

    probe, model, tok, hook = _user_end_probe(tiny_organism)
    scorer = ProbeScorer(probe, model, tok, metadata={"hook": hook, "position": "user_end", "model": "organism"})
    tests = [json.loads(line)["prompt"] for line in Path(tiny_organism.test_prefs).read_text().splitlines()
             if line.strip()]
    ref = statistics.fmean(prompt_nll(scorer, tests))
    # openings of the test prompts: a prefix the organism's users never write ("can you") would put any prompt
    # that starts with it outside their distribution, whatever the search appends
    prefixes = list(dict.fromkeys(" ".join(t.split()[:2]) for t in tests))[:6]
    options = {"search_width": 16, "topk": 32}
    found = Searcher(scorer, "gcg", Budget(evaluations=None, forwards=96), options=options).optimize_many(prefixes)
    nll = statistics.fmean(prompt_nll(scorer, [r.best.prompt for r in found]))
    salad = Searcher(scorer, "gcg", Budget(evaluations=None, forwards=96), options=options,
                     objective={"logprob_weight": 0.0}).optimize_many(prefixes)
    salad_nll = statistics.fmean(prompt_nll(scorer, [r.best.prompt for r in salad]))
    assert nll <= 1.5 * ref and nll < 0.5 * salad_nll, (nll, ref, salad_nll, [r.best.prompt for r in found])
    assert salad_nll > 2.0 * ref  # the null: without the fluency term GCG leaves the model's distribution
