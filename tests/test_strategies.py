"""The contract every registered strategy meets, run through the same checks (a pickle round trip included:
strategies travel to Ray workers), a strategy run against a fake context, and the span gradient GCG asks for
against finite differences of the probe score."""
from __future__ import annotations

import pickle
import random

import pytest
import torch

import rsearch.strategies  # noqa: F401  (registers the built-ins before REGISTRY is read at collection)
from rsearch.probes import make_probe
from rsearch.errors import RsearchError
from rsearch.scorer import ProbeScorer
from rsearch.searcher import Budget, SearchContext, Searcher
from rsearch.strategies.base import REGISTRY, Candidate, Scored, StrategyContext, make_strategy
from rsearch.strategies.gcg import filter_ids, sample_ids_from_grad
from rsearch.targets import make_target
from rsearch.strategies.optuna_templates import load_template
from tiny import tiny_model, tiny_tokenizer

BUDGET = 20


@pytest.fixture(scope="module")
def scorer():
    probe = make_probe("linear", 32)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(1)))
    return ProbeScorer(probe, tiny_model("llama"), tiny_tokenizer(),
                       metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1", "model": "tiny"})


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tmpl") / "tiny.yaml"
    path.write_text('template: "{greet} {ask} {tail}"\n'
                    'slots:\n'
                    '  greet: ["", "hello", "please"]\n'
                    '  ask: ["list some animals", "what is two plus three", "repeat after me cat"]\n'
                    '  tail: ["", "thank you", "please"]\n')
    return str(path)


def small_options(name, template):
    """Options that keep each strategy's steps small enough for a 20-evaluation budget."""
    return {"random": {"max_tokens": 6, "batch": 6},
            "beam": {"width": 2, "branching": 3, "chunk": 2, "max_tokens": 8},
            "gcg": {"n_tokens": 4, "search_width": 8, "topk": 8},
            "optuna": {"template": template, "batch": 4, "n_startup_trials": 4}}.get(name, {})


def spy(cls, log):
    """The strategy class, recording every ask's n and answer."""

    class Spy(cls):
        def ask(self, n):
            out = super().ask(n)
            log.append((n, list(out)))
            return out

    Spy.name = cls.name
    return Spy


def test_builtins_are_registered():
    assert {"beam", "gcg", "optuna", "random"} <= set(REGISTRY)
    with pytest.raises(RsearchError, match="unknown strategy 'nope'"):
        make_strategy("nope")
    with pytest.raises(RsearchError, match="unknown option 'widht'"):
        make_strategy("beam", {"widht": 3})
    with pytest.raises(RsearchError, match="width must be at least 1"):
        make_strategy("beam", {"width": 0})


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("target", ["prompt", "completion"])
def test_strategy_contract(name, target, scorer, tiny_template):
    options = small_options(name, tiny_template)
    log: list = []
    searcher = Searcher(scorer, spy(REGISTRY[name], log), BUDGET, options=options, target=target, seed=7)
    result = searcher.optimize("what is")
    frame = scorer.target(target, "what is")
    # valid token ids: every candidate asked for is a non-empty span of real, non-special tokens
    for n, asked in log:
        assert 1 <= n <= BUDGET
        assert len(asked) <= n, f"{name} answered ask({n}) with {len(asked)} candidates"
        for c in asked:
            assert frame.valid(c.ids), c
            assert c.text == frame.decode(c.ids)
    # budget respected: evaluations never exceed it (and a strategy that is not exhausted uses it all)
    assert result.evaluations <= BUDGET
    assert sum(len(a) for _, a in log) == result.evaluations
    if name != "optuna":
        assert result.evaluations == BUDGET
    # best-so-far never decreases, one entry per evaluation, ending at the best
    curve = result.best_so_far
    assert len(curve) == result.evaluations
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    assert curve[-1] == pytest.approx(result.best_score)
    assert [f.score for f in result.top] == sorted((f.score for f in result.top), reverse=True)
    assert len({f.ids for f in result.top}) == len(result.top)
    # seeded reproducibility: the same seed gives the same result, another seed (usually) not
    again = Searcher(scorer, name, BUDGET, options=options, target=target, seed=7).optimize("what is")
    assert again == result


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_strategy_pickle_round_trip(name, scorer, tiny_template):
    """Strategies travel to Ray workers: one survives a pickle round trip and then searches the same."""
    strategy = make_strategy(name, small_options(name, tiny_template))
    clone = pickle.loads(pickle.dumps(strategy))
    assert type(clone) is type(strategy) and clone.config == strategy.config
    # the clone searches exactly as the original does
    run = [Searcher(scorer, x, BUDGET, seed=3).optimize("what is") for x in (strategy, clone)]
    assert run[0] == run[1]


class FakeContext:
    """A StrategyContext without a model: spans are drawn uniformly from a few words, the gradient prefers word 11."""

    def __init__(self, target, seed=0):
        self.target, self.seed = target, seed
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.words = [9, 10, 11, 12]
        self.sampled: list[tuple] = []

    def candidate(self, ids):
        return Candidate(tuple(ids), self.target.decode(ids))

    def valid(self, ids):
        return self.target.valid(ids)

    def sample_spans(self, bases, max_new_tokens, temperature=1.0, *, allowed=None, stop=True):
        self.sampled.append((len(bases), max_new_tokens, stop))
        return [(tuple(b) + tuple(self.rng.choice(self.words) for _ in range(max_new_tokens)), False) for b in bases]

    def span_gradient(self, ids):
        grad = torch.zeros(len(ids), len(self.target.allowed))
        grad[:, 11] = 1.0
        return grad


def test_gcg_against_a_fake_context():
    """GCG asks only what the protocol offers: it starts from a sampled span and moves along the gradient."""
    target = make_target("prompt", tiny_tokenizer(), "what is", 64)
    ctx = FakeContext(target)
    assert isinstance(ctx, StrategyContext)
    gcg = make_strategy("gcg", {"n_tokens": 4, "search_width": 8, "topk": 1, "allow_non_ascii": True})
    gcg.setup(ctx)
    (first,) = gcg.ask(8)
    assert ctx.sampled == [(1, 4, False)] and len(first.ids) == 4  # the init: 4 tokens, no end-of-turn stop
    gcg.tell([Scored(first, 0.0, 0.0)])
    for step in range(3):
        cands = gcg.ask(8)
        assert cands and all(ctx.valid(c.ids) and c.ids != gcg.current for c in cands)
        # top-1 of a gradient that prefers token 11: every candidate writes 11 at one position
        assert all(sum(a != b for a, b in zip(c.ids, gcg.current)) == 1 and 11 in c.ids for c in cands)
        best = max(cands, key=lambda c: c.ids.count(11))
        gcg.tell([Scored(c, float(c.ids.count(11)), 0.0) for c in cands])
        assert gcg.current == best.ids
    assert gcg.current.count(11) >= min(4, first.ids.count(11) + 3)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_seconds_budget_stops_search(name, scorer, tiny_template):
    options = small_options(name, tiny_template)
    result = Searcher(scorer, name, Budget(evaluations=None, seconds=0.3), options=options).optimize("hello")
    assert result.evaluations >= 1 and result.seconds < 10


def test_gcg_token_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    probe = make_probe("linear", 32).double()
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    s = ProbeScorer(probe, model, tiny_tokenizer(), metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1"})
    target = s.target("prompt", "what is")
    ctx = SearchContext(s, target, Searcher(s, "gcg", 1).objective, seed=0)
    assert isinstance(ctx, StrategyContext)
    ids = torch.tensor([9, 10, 11, 12])
    grad = ctx.span_gradient(ids.tolist())                                      # [span, vocab]
    w_e = s.embedding_matrix

    def score_of(one_hot):
        emb = torch.cat([s.embed(torch.tensor(target.prefix_ids)), one_hot @ w_e,
                         s.embed(torch.tensor(target.suffix_ids))])[None]
        with torch.no_grad():
            return float(s.score_embeds(emb, [target.row(ids.tolist())], target.position)[0][0])

    base = torch.nn.functional.one_hot(ids, w_e.shape[0]).double()
    eps = 1e-2  # activations reach the probe in float32 (positions.gather), so a small eps drowns in rounding
    checked = 0
    for pos in range(4):
        for tok in (5, 9, 17, 20, 30):
            up, down = base.clone(), base.clone()
            up[pos, tok] += eps
            down[pos, tok] -= eps
            fd = (score_of(up) - score_of(down)) / (2 * eps)
            assert grad[pos, tok] == pytest.approx(fd, rel=1e-2, abs=1e-5), (pos, tok)
            checked += 1
    assert checked == 20 and grad.abs().max() > 1e-3


def test_gcg_sampler_and_filter():
    ids = torch.tensor([9, 10, 11])
    grad = torch.zeros(3, 20)
    grad[:, 15] = 5.0
    grad[:, 16] = 4.0
    not_allowed = torch.zeros(20, dtype=torch.bool)
    not_allowed[15] = True
    out = sample_ids_from_grad(ids, grad, 50, 2, 1, not_allowed, torch.Generator().manual_seed(0))
    assert out.shape == (50, 3)
    assert ((out != ids).sum(1) <= 1).all()          # one position replaced
    assert not (out == 15).any()                       # masked token never chosen
    tok = tiny_tokenizer()

    class T:  # minimal target for filter_ids
        def roundtrips(self, c):
            return tuple(tok(tok.decode(c), add_special_tokens=False)["input_ids"]) == tuple(c)

    assert filter_ids(torch.tensor([[9, 10], [6, 10]]), T()) == [(9, 10)]  # the word-level tokenizer drops "\n"


def test_optuna_template_errors(tmp_path, scorer):
    bad = tmp_path / "bad.yaml"
    for text, msg in [('template: "{a} {b}"\nslots:\n  a: ["x"]\n', "no slot"),
                      ('template: "{a}"\nslots:\n  a: []\n', "non-empty list"),
                      ('template: "{a}"\nslots:\n  a: ["x"]\n  b: ["y"]\n', "not used"),
                      ('template: "hello"\nslots:\n  a: ["x"]\n', "no {slot}"),
                      ('template: "{a"\nslots:\n  a: ["x"]\n', "malformed"),
                      ('slots: [1, 2\n', "not valid YAML")]:
        bad.write_text(text)
        with pytest.raises(RsearchError, match=msg):
            make_strategy("optuna", {"template": str(bad)})
    with pytest.raises(RsearchError, match="no template file"):
        make_strategy("optuna", {"template": "nonexistent"})
    bad.write_text('template: "{a}"\nslots:\n  a: ["zebra crossing"]\n')
    with pytest.raises(RsearchError, match="unknown to the model's tokenizer"):
        Searcher(scorer, "optuna", 5, options={"template": str(bad)}).optimize("hello")


def test_shipped_organism_template_parses():
    t = load_template("organism")
    assert [s for s, _ in t.slots] == ["lead", "task", "tail"]
    assert t.fill({"lead": "", "task": "compliment my cooking .", "tail": "thanks ."}) == "compliment my cooking . thanks ."


def test_optuna_shared_journal_storage(tmp_path, scorer, tiny_template):
    journal = tmp_path / "study.log"
    opts = {"template": tiny_template, "storage": f"journal:{journal}", "batch": 3}
    a = Searcher(scorer, "optuna", 6, options=opts).optimize("what is")
    b = Searcher(scorer, "optuna", 6, options=opts).optimize("what is")  # a second worker joins the same study
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.n_trials >= a.evaluations + b.evaluations
