"""The contract every registered strategy meets, run through the same checks (a pickle round trip included:
strategies travel to Ray workers), a strategy run against a fake context, and the span gradient GCG asks for
against finite differences of the probe score."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

import rsearch.strategies  # noqa: F401  (registers the built-ins before REGISTRY is read at collection)
from rsearch.probes import make_probe
from rsearch.errors import RsearchError
from rsearch.chat import encode_conversation
from rsearch.scorer import ProbeScorer
from rsearch.searcher import Budget, SearchContext, Searcher
from rsearch.strategies.base import REGISTRY, Candidate, Scored, StrategyContext, make_strategy
from rsearch.strategies.gcg import filter_ids, sample_ids_from_grad
from rsearch.targets import make_target
from rsearch.strategies.mined_templates import TEMPLATE, mine_slots, mined_slots
from rsearch.strategies.optuna_templates import Template
from rsearch.strategies.testing import StrategyContract, check_strategy
from tiny import ARCHS, feedback_records, tiny_bpe_tokenizer, tiny_model, tiny_tokenizer, write_jsonl

BUDGET = 20


def tiny_scorer():
    probe = make_probe("linear", 32)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(1)))
    return ProbeScorer(probe, tiny_model("llama"), tiny_tokenizer(),
                       metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1", "model": "tiny"})


@pytest.fixture(scope="module")
def scorer():
    return tiny_scorer()


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
    check_strategy(name, scorer, options=small_options(name, tiny_template), target=target, budget=BUDGET,
                   exhausts=name != "optuna")


class TestToyFromOutsideThePackage(StrategyContract):
    """An outside author's strategy through the shipped contract test case (here on the tiny test model)."""

    strategy = "tests.toy:Toy"
    options = {"width": 3}

    @pytest.fixture(scope="class")
    @classmethod
    def scorer(cls):
        return tiny_scorer()


def test_the_contract_catches_a_strategy_that_breaks_it(scorer):
    """A strategy that answers ask(n) with more than n candidates fails the shipped check."""
    from tests.toy import Toy

    class Greedy(Toy):
        name = "greedy"

        def ask(self, n):
            drawn = self.context.sample_spans([self.best] * (n + 1), 1)
            return [self.context.candidate(ids) for ids, _ in drawn]

    with pytest.raises(AssertionError, match="answered ask"):
        check_strategy(Greedy, scorer, budget=BUDGET)


def test_strategies_by_spec_and_their_errors():
    assert make_strategy("tests.toy:Toy", {"width": 2}).config.width == 2
    for spec, message in (("tests.toy:Nope", "has no 'Nope'"), ("tests.toy:ToyConfig", "not a subclass"),
                          ("no.such_module:X", "cannot import no.such_module")):
        with pytest.raises(RsearchError, match=message):
            make_strategy(spec)
    with pytest.raises(RsearchError, match="toy.width: must be at least 1"):
        make_strategy("tests.toy:Toy", {"width": 0})


class FakeContext:
    """A StrategyContext without a model: spans are drawn uniformly from a few words, the gradient prefers word 11."""

    def __init__(self, target, seed=0):
        self.target, self.seed = target, seed
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.words = [9, 10, 11, 12]
        self.sampled: list[tuple] = []
        self.probe_metadata = {"hook": "blocks.2.hook_resid_pre"}

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
    assert ctx.sampled == [(1, 4, True)] and len(first.ids) == 4  # the init: ≤ 4 tokens, ending with the turn
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
    fixed = make_strategy("gcg", {"n_tokens": 4, "natural_length": False, "allow_non_ascii": True})
    fixed.setup(ctx := FakeContext(target))
    fixed.ask(1)
    assert ctx.sampled == [(1, 4, False)]  # nanoGCG's fixed length: drawn past the turn's end


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_seconds_budget_stops_search(name, scorer, tiny_template):
    options = small_options(name, tiny_template)
    result = Searcher(scorer, name, Budget(evaluations=None, seconds=0.3), options=options).optimize("hello")
    assert result.evaluations >= 1 and result.seconds < 10


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("limit", [10, 40])
def test_forwards_budget_charges_sampling_gradients_and_scoring(name, limit, scorer, tiny_template, monkeypatch):
    """Every strategy pays the same prices (rsearch.searcher.Budget), charged where the work happens: each drawn
    token by the context's sampler, each gradient (3) by the context, each scored candidate by the Searcher. A
    search stops at its budget in forward-equivalents, and its result reports candidates and forward-equivalents."""
    import rsearch.searcher as searcher_module

    drawn, gradients = [], []
    real_sample, real_gradient = searcher_module.sample_tokens, scorer.span_gradient

    def counted_sample(*args, **kwargs):
        got = real_sample(*args, **kwargs)
        drawn.append(sum(len(new) + int(stopped) for new, stopped in got))
        return got

    monkeypatch.setattr(searcher_module, "sample_tokens", counted_sample)
    monkeypatch.setattr(scorer, "span_gradient", lambda *a, **k: gradients.append(1) or real_gradient(*a, **k))
    options = small_options(name, tiny_template)
    r = Searcher(scorer, name, Budget(evaluations=None, forwards=limit), options=options, seed=5).optimize("what is")
    assert r.compute == {"scored": r.evaluations, "sampled": sum(drawn), "gradient": 3 * len(gradients)}
    assert r.forwards == sum(r.compute.values()) <= limit
    assert r.to_dict()["forwards"] == r.forwards and r.to_dict()["evaluations"] == r.evaluations >= 1
    # stopped at the budget: what is left pays for no further step (a gradient and a candidate cost 4)
    exhausted = name == "optuna" and r.evaluations == 27  # the tiny template has 27 combinations
    assert exhausted or limit - r.forwards < 4, (r.forwards, r.compute)
    if name in ("beam", "random"):
        assert r.compute["sampled"] >= r.evaluations  # sampling is not free: each span drew at least one token
    if name == "gcg":
        assert gradients and 1 <= r.compute["sampled"] <= 4 + 1  # the init: ≤ n_tokens drawn, and the turn's end
        assert r.evaluations <= 1 + len(gradients) * options["search_width"]
    if name == "optuna":
        assert r.forwards == r.evaluations  # templates are filled, not sampled


def test_gcg_token_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    probe = make_probe("linear", 32).double()
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    s = ProbeScorer(probe, model, tiny_tokenizer(), metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1"})
    target = s.target("prompt", "what is")
    ctx = SearchContext(s, target, Searcher(s, "gcg", 1, objective={"logprob_weight": 0.0}).objective, seed=0)
    assert isinstance(ctx, StrategyContext)
    ids = torch.tensor([9, 10, 11, 12])
    grad = ctx.span_gradient(ids.tolist())                                      # [span, vocab]
    w_e = s.embed(torch.arange(s.vocab_size))  # [vocab, d_model]: each token's embedding as the model makes it

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


@pytest.mark.parametrize("arch", ARCHS)
def test_gcg_searches_every_architecture(arch):
    """GCG (with the default fluency term) runs on each tiny architecture, and what it reports is what is scored."""
    probe = make_probe("linear", 32)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(1)))
    s = ProbeScorer(probe, tiny_model(arch, vocab_size=len(tiny_tokenizer())), tiny_tokenizer(),
                    metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1"})
    result = Searcher(s, "gcg", 9, options={"n_tokens": 3, "search_width": 4, "topk": 4}).optimize("what is")
    target = s.target("prompt", "what is")
    rescored = s.score_rows([target.row(result.best.ids)], target.position).probe[0]
    assert result.evaluations >= 2 and float(rescored) == pytest.approx(result.best.probe_score, abs=1e-5)


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
        def roundtrip_mask(self, spans):
            return [tuple(tok(tok.decode(c), add_special_tokens=False)["input_ids"]) == tuple(c) for c in spans]

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


def test_mined_template_takes_openers_tasks_and_closers_from_the_prompts():
    """Mining reads prompt texts only: openers and closers that detach from the task phrasings, and the tasks."""
    rng = random.Random(0)
    leads, tails = ["", "please ,", "hi !"], ["", "thanks .", "answer briefly ."]
    tasks = ["what is 3 plus 5 ?", "name two fruits .", "compute 7 + 8 .", "what do you think of my poem ?"]
    texts = [" ".join(x for x in (rng.choice(leads), rng.choice(tasks), rng.choice(tails)) if x) for _ in range(300)]
    slots = mine_slots(texts)
    assert set(slots["lead"]) == set(leads) and set(slots["tail"]) == set(tails)  # not "what", not "?" or "."
    assert sorted(slots["task"]) == sorted(tasks)
    two = mine_slots(texts, n_choices=2)
    assert len(two["task"]) == 2 and set(two["task"]) < set(tasks) and len(two["lead"]) == 3  # "" + 2 openers


def test_optuna_default_template_is_mined_from_the_probes_dataset(tmp_path, scorer):
    data = tmp_path / "train_prefs.jsonl"
    write_jsonl(data, feedback_records(60, seed=3))
    mined = Template(TEMPLATE, mined_slots(str(data), "train_prefs", 2000, 12))
    slots = dict(mined.slots)
    prompts = {r["prompt"] for r in feedback_records(60, seed=3)}
    assert "please" in slots["tail"] and "what is two plus three" in slots["task"]
    # every choice is a piece of the training prompts: openers start them, closers end them, tasks are inside
    assert all(any(p.startswith(c) for p in prompts) for c in slots["lead"])
    assert all(any(p.endswith(c) for p in prompts) for c in slots["tail"])
    assert all(any(c in p for p in prompts) for c in slots["task"])
    with_data = ProbeScorer(scorer.probe, scorer.model, scorer.tokenizer,
                            metadata={**scorer.metadata, "dataset": str(data)})
    result = Searcher(with_data, "optuna", 10, options={"batch": 4}).optimize("hello")
    fills = {mined.fill(dict(zip(slots, c))) for c in itertools.product(*slots.values())}
    assert all(f.prompt.removeprefix("hello ") in fills for f in result.top)
    with pytest.raises(RsearchError, match="names no dataset"):
        Searcher(scorer, "optuna", 4).optimize("hello")


def test_optuna_joins_the_template_to_the_prefix_as_one_message(tmp_path):
    """On a byte-level BPE tokenizer, prefix `Explain` + the template's text reads `Explain what is …`."""
    tok = tiny_bpe_tokenizer()
    probe = make_probe("linear", 32)
    s = ProbeScorer(probe, tiny_model("llama", vocab_size=len(tok)), tok,
                    metadata={"hook": "blocks.2.hook_resid_pre", "position": "-1"})
    path = tmp_path / "t.yaml"
    path.write_text('template: "{task} {tail}"\nslots:\n  task: ["what is the moon?", "tell me a story."]\n'
                    '  tail: ["", "Please explain."]\n')
    result = Searcher(s, "optuna", 8, options={"template": str(path), "batch": 4}).optimize("Explain")
    assert {f.prompt for f in result.top} == {"Explain what is the moon?", "Explain tell me a story.",
                                              "Explain what is the moon? Please explain.",
                                              "Explain tell me a story. Please explain."}
    best = result.best
    assert s.target("prompt", "Explain").row(best.ids) == encode_conversation(tok, best.prompt)


def test_optuna_shared_journal_storage(tmp_path, scorer, tiny_template):
    journal = tmp_path / "study.log"
    opts = {"template": tiny_template, "storage": f"journal:{journal}", "batch": 3}
    a = Searcher(scorer, "optuna", 6, options=opts).optimize("what is")
    b = Searcher(scorer, "optuna", 6, options=opts).optimize("what is")  # a second worker joins the same study
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.n_trials >= a.evaluations + b.evaluations
