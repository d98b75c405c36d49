"""The contract every strategy meets, for strategy authors inside the package or outside it (as Optuna ships its
sampler tests): `check_strategy` runs a strategy through the Searcher and asserts the contract, and
`StrategyContract` is a pytest test case to subclass:

    from rsearch.strategies.testing import StrategyContract

    class TestMyStrategy(StrategyContract):
        strategy = "mypackage.search:MyStrategy"   # or the class
        options = {"width": 2}                      # small enough for a 20-evaluation budget

It needs pytest (the `test` extra). Its `scorer` fixture is a random linear probe on the embedded tiny organism's post-RL model (built once on the
CPU, ~2 minutes, then cached under $RSEARCH_HOME); override the fixture to search with a model of your own.
The checks: every candidate asked for is a valid span and no more than asked; the budget is respected (and
spent, unless `exhausts` is False); best-so-far never decreases and ends at the best; the top list is sorted and
distinct; the same seed gives the same result; and the strategy survives a pickle round trip (strategies travel
to Ray workers) and then searches the same.
"""
from __future__ import annotations

import pickle
from typing import Any, ClassVar

import pytest
import torch

from rsearch.hooks import HookPoint
from rsearch.models import load_model
from rsearch.organism import ensure
from rsearch.probes import make_probe
from rsearch.scorer import ProbeScorer
from rsearch.searcher import Searcher
from rsearch.strategies.base import Strategy, make_strategy, strategy_class


def _recording(cls: type[Strategy], log: list) -> type[Strategy]:
    """`cls`, recording every ask's n and the candidates it returned."""

    class Recorded(cls):  # type: ignore[misc, valid-type]
        def ask(self, n):
            out = super().ask(n)
            log.append((n, list(out)))
            return out

    Recorded.name = cls.name
    return Recorded


def check_strategy(strategy: str | type[Strategy], scorer: ProbeScorer, *, options: dict | None = None,
                   target: str = "prompt", budget: int = 20, prefix: str = "what is", seed: int = 7,
                   exhausts: bool = True) -> None:
    """Asserts the strategy contract for one target kind ("prompt" or "completion"); AssertionError says which
    part failed."""
    cls = strategy_class(strategy) if isinstance(strategy, str) else strategy
    options = dict(options or {})
    log: list = []
    result = Searcher(scorer, _recording(cls, log), budget, options=options, target=target, seed=seed).optimize(prefix)
    frame = scorer.target(target, prefix)
    for n, asked in log:
        assert 1 <= n <= budget, f"ask({n}) outside 1..{budget}"
        assert len(asked) <= n, f"{cls.name} answered ask({n}) with {len(asked)} candidates"
        for c in asked:
            assert frame.valid(c.ids), f"{cls.name} proposed an invalid span {c}"
            assert c.text == frame.decode(c.ids), f"{cls.name}: a candidate's text is not its ids' decoding"
    assert result.evaluations <= budget, f"{result.evaluations} evaluations past the budget of {budget}"
    assert sum(len(a) for _, a in log) == result.evaluations, "evaluations differ from the candidates asked for"
    if exhausts:
        assert result.evaluations == budget, f"{cls.name} stopped at {result.evaluations} of {budget} evaluations"
    curve = result.best_so_far
    assert len(curve) == result.evaluations, "best_so_far needs one entry per evaluation"
    assert all(b >= a for a, b in zip(curve, curve[1:])), "best_so_far decreased"
    assert abs(curve[-1] - result.best_score) <= 1e-6 * max(1.0, abs(result.best_score)), "best_so_far ≠ best"
    assert [f.score for f in result.top] == sorted((f.score for f in result.top), reverse=True), "top not sorted"
    assert len({f.ids for f in result.top}) == len(result.top), "top holds a span twice"
    again = Searcher(scorer, cls, budget, options=options, target=target, seed=seed).optimize(prefix)
    assert again == result, f"{cls.name} is not reproducible with the same seed"
    made = make_strategy(strategy, options) if isinstance(strategy, str) else cls(options)
    clone = pickle.loads(pickle.dumps(made))  # its own bytes, in memory: the trip a strategy makes to a Ray worker
    assert type(clone) is type(made) and clone.config == made.config, "the pickle round trip changed the strategy"
    runs = [Searcher(scorer, x, budget, target=target, seed=3).optimize(prefix) for x in (made, clone)]
    assert runs[0] == runs[1], "a pickled copy searches differently"


def organism_scorer(seed: int = 1) -> ProbeScorer:
    """A random linear probe at the tiny organism's last layer (the organism is built once, then cached)."""
    org = ensure("tiny", seed=0)
    model, tok = load_model(org.post_dir, device="cpu")
    d, last = model.config.hidden_size, model.config.num_hidden_layers - 1
    probe = make_probe("linear", d)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(d, generator=torch.Generator().manual_seed(seed)))
    return ProbeScorer(probe, model, tok, metadata={"hook": HookPoint(last, "resid_post").name, "position": "-1",
                                                    "model": str(org.post_dir)})


class StrategyContract:
    """A pytest test case: subclass it with `strategy` (a name, a `module.path:Class` or the class) and
    `options`."""

    strategy: ClassVar[Any] = None
    options: ClassVar[dict] = {}
    budget: ClassVar[int] = 20
    exhausts: ClassVar[bool] = True

    @pytest.fixture(scope="class")
    @classmethod
    def scorer(cls) -> ProbeScorer:
        return organism_scorer()

    @pytest.mark.parametrize("target", ["prompt", "completion"])
    def test_contract(self, scorer, target):
        check_strategy(self.strategy, scorer, options=self.options, target=target, budget=self.budget,
                       exhausts=self.exhausts)
