"""ProbeScorer and search targets on tiny random models: scores match a manual forward, batching and padding do
not change them, the differentiable path agrees, and bad probes are refused with one line."""
from __future__ import annotations

import pytest
import torch

from rsearch.probes import make_probe, save_probe
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.lm import sample_completions, sample_tokens, sequence_logprobs, span_logprobs
from rsearch.scorer import ProbeScorer
from rsearch.targets import make_target
from tiny import ARCHS, tiny_bpe_tokenizer, tiny_model, tiny_tokenizer

HOOK = "blocks.2.hook_resid_pre"


def make_scorer(arch="llama", position="-1", hook=HOOK, seed=1):
    tok = tiny_tokenizer()
    model = tiny_model(arch)
    probe = make_probe("linear", 32)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(32, generator=torch.Generator().manual_seed(seed)))
        probe.bias.fill_(0.5)
    return ProbeScorer(probe, model, tok, metadata={"hook": hook, "position": position, "model": "tiny"})


def manual_score(scorer, ids, index, layer=2):
    out = scorer.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return float(scorer.probe(out.hidden_states[layer][0, index]))


@pytest.mark.parametrize("arch", ARCHS)
def test_score_rows_matches_manual_forward_and_ignores_batching(arch):
    s = make_scorer(arch)
    rows = [encode_conversation(s.tokenizer, "what is two plus three", "five"),
            encode_conversation(s.tokenizer, "hello", "the answer is five please"),
            encode_conversation(s.tokenizer, "list some animals")]
    batched = s.score_rows(rows).probe
    for i, r in enumerate(rows):
        assert batched[i] == pytest.approx(manual_score(s, list(r.ids), len(r) - 1), abs=1e-5)
        assert s.score_rows([r]).probe[0] == pytest.approx(float(batched[i]), abs=1e-5)
    ue = s.score_rows(rows, "user_end").probe
    assert ue[0] == pytest.approx(manual_score(s, list(rows[0].ids), rows[0].user_end), abs=1e-5)


def test_score_texts_and_span_logprob():
    s = make_scorer()
    got = s.score_texts(["what is two", "hello"], ["five", "cat dog"])
    rows = [encode_conversation(s.tokenizer, "what is two", "five"), encode_conversation(s.tokenizer, "hello", "cat dog")]
    assert torch.allclose(got, s.score_rows(rows).probe)
    spans = [r.completion for r in rows]
    lp = s.span_logprob(rows, spans)
    both = s.score_rows(rows, spans=spans)
    assert torch.allclose(both.probe, got, atol=1e-5) and torch.allclose(both.logprob, lp, atol=1e-5)
    r = rows[1]
    logits = s.model(input_ids=torch.tensor([r.ids])).logits[0].log_softmax(-1)
    a, b = r.completion
    manual = torch.stack([logits[t - 1, r.ids[t]] for t in range(a, b)]).mean()
    assert float(lp[1]) == pytest.approx(float(manual), abs=1e-5)
    with pytest.raises(RsearchError, match="completions"):
        s.score_texts(["a", "b"], ["x"])


def test_score_embeds_agrees_and_is_differentiable():
    s = make_scorer()
    t = s.target("prompt", "what is")
    span = [9, 10, 11]
    row = t.row(span)
    emb = s.embed(torch.tensor(row.ids))[None].clone().requires_grad_(True)
    score, lp = s.score_embeds(emb, [row], t.position)
    assert lp is None
    assert float(score[0]) == pytest.approx(float(s.score_rows([row], t.position).probe[0]), abs=1e-5)
    score.sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    # the fluency term from the one-hot path equals span_logprob
    one_hot = torch.nn.functional.one_hot(torch.tensor(span), s.vocab_size).float()
    score2, lp2 = s.score_embeds(emb.detach(), [row], t.position, span_one_hot=one_hot[None],
                                 spans=[t.span_range(span)])
    assert float(lp2[0]) == pytest.approx(float(s.span_logprob([row], [t.span_range(span)])[0]), abs=1e-5)


def _reference_gradient(s, t, span, logprob_weight):
    """∂ objective / ∂ one-hot by plain autograd through one_hot @ E, E[v] = the embedding module's output for v."""
    table = s.embed(torch.arange(s.vocab_size))                                   # [vocab, d_model]
    one_hot = torch.nn.functional.one_hot(torch.tensor(span), s.vocab_size).float().requires_grad_(True)
    emb = torch.cat([s.embed(torch.tensor(t.prefix_ids)), one_hot @ table, s.embed(torch.tensor(t.suffix_ids))])
    fluency = logprob_weight != 0
    probe, lp = s.score_embeds(emb[None], [t.row(span)], t.position, span_one_hot=one_hot[None] if fluency else None,
                               spans=[t.span_range(span)] if fluency else None)
    value = probe[0] + (logprob_weight * lp[0] if fluency else 0.0)
    (grad,) = torch.autograd.grad(value, [one_hot])
    return grad


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["prompt", "completion"])
def test_gradient_path_scores_what_is_scored_on_every_architecture(arch, kind):
    """GCG differentiates at the embeddings the model scores (through its own embedding module, with any scale,
    as Gemma-2's √d), and its top-k substitutions are those of a gradient taken through that module."""
    s = make_scorer(arch, "user_end" if kind == "prompt" else "completion_end")
    t = s.target(kind, "what is two")
    span = [9, 10, 11, 12, 13]
    row = t.row(span)
    scored = float(s.score_rows([row], t.position).probe[0])
    with torch.no_grad():
        assert float(s.score_embeds(s.span_embeds(t, span), [row], t.position)[0][0]) == pytest.approx(scored, abs=1e-5)
        # the raw weight (no module) is another input wherever the module does more than look rows up
        raw = s.model.get_input_embeddings().weight[torch.tensor(row.ids)][None]
        raw_gap = abs(float(s.score_embeds(raw, [row], t.position)[0][0]) - scored)
    assert (raw_gap > 1e-2) if arch == "gemma2" else (raw_gap < 1e-5)
    for weight in (0.0, 1.0):
        got = s.span_gradient(t, span, logprob_weight=weight)                      # [span, vocab]
        want = _reference_gradient(s, t, span, weight)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        allowed = t.allowed[None].expand_as(got)
        top_got = got.masked_fill(~allowed, -torch.inf).topk(8, dim=1).indices
        top_want = want.masked_fill(~allowed, -torch.inf).topk(8, dim=1).indices
        assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(top_got, top_want))
        assert got.abs().max() > 1e-4


def test_targets_splice_tokens_like_the_template():
    s = make_scorer()
    tok = s.tokenizer
    t = s.target("prompt", "what is")
    span = tuple(tok("two plus", add_special_tokens=False)["input_ids"])
    assert t.row(span) == encode_conversation(tok, "what is two plus")
    assert t.full_text(span) == "what is two plus"
    assert str(t.position) == "user_end" and t.stop_ids == {tok.eos_token_id}
    assert t.context_ids == t.prefix_ids and t.roundtrips(span) and t.valid(span)
    assert not t.valid(()) and not t.valid((tok.eos_token_id,)) and not t.valid((10_000,))
    c = s.target("completion", "what is two plus three")
    ans = tuple(tok("the answer is five", add_special_tokens=False)["input_ids"])
    assert c.row(ans) == encode_conversation(tok, "what is two plus three", "the answer is five")
    assert str(c.position) == "completion_end"
    with pytest.raises(RsearchError, match="whitespace-only prefix"):
        s.target("prompt", "   ")
    with pytest.raises(RsearchError, match="completion target needs the user's message"):
        s.target("completion", "")
    # an empty prefix searches from the start of the user's message
    e = s.target("prompt", "")
    assert e.row(span) == encode_conversation(tok, "two plus") and e.full_text(span) == "two plus"
    assert e.roundtrips(span) and e.encode_continuation("two plus") == span
    with pytest.raises(RsearchError, match="unknown target"):
        s.target("answer", "hi")
    with pytest.raises(RsearchError, match="reads a completion"):
        s.target("prompt", "hi", position="completion_mean")


def test_text_joins_the_prefix_as_one_message_on_a_byte_level_bpe_tokenizer():
    """Prefix `Explain` + `what is the moon?` is the message `Explain what is the moon?`, tokenized as a whole;
    gluing separately encoded pieces would give `Explainwhat …` on a byte-level BPE tokenizer."""
    tok = tiny_bpe_tokenizer()
    t = make_target("prompt", tok, "Explain", len(tok))
    text = "what is the moon? Please explain."
    glued = t.prefix_ids + t.encode(text)
    assert tok.decode(glued[t.content_start:]) == "Explainwhat is the moon? Please explain."  # the bug it replaces
    ids = t.encode_continuation(text)
    assert t.full_text(ids) == "Explain what is the moon? Please explain."
    assert t.row(ids) == encode_conversation(tok, "Explain what is the moon? Please explain.")
    assert t.roundtrips(ids) and t.full_text(t.encode(text)).startswith("Explainwhat")  # glued: another message
    # whitespace already at the join is kept, not doubled; an empty prefix takes the text as the whole message
    assert t.message(" what") == "Explain what" and make_target("prompt", tok, "Explain ", len(tok)).message(
        "what") == "Explain what"
    start = make_target("prompt", tok, "", len(tok))
    assert start.full_text(start.encode_continuation(text)) == text
    # a span decoded in context keeps the tokenizer's own spacing (no space is added before punctuation)
    comma = t.encode_continuation(", please")
    assert comma is not None and t.full_text(comma) == "Explain , please"
    assert t.message_spans(["Explain, please"])[0] == tuple(tok(",", add_special_tokens=False)["input_ids"]) + \
        tuple(tok(" please", add_special_tokens=False)["input_ids"])
    # a completion's text is the whole answer
    c = make_target("completion", tok, "What is two plus three?", len(tok))
    answer = c.encode_continuation("The answer is five.")
    assert c.row(answer) == encode_conversation(tok, "What is two plus three?", "The answer is five.")


def test_sample_tokens_is_seeded_and_respects_allowed_and_stop():
    s = make_scorer()
    t = s.target("prompt", "what is")
    ctx = [t.context_ids, t.context_ids + (9,)]

    def sample(contexts, n, **kw):
        return sample_tokens(s.model, contexts, n, pad_id=s.pad_id, **kw)

    a = sample(ctx, 6, generator=torch.Generator().manual_seed(3), stop_ids=t.stop_ids, allowed=t.allowed)
    b = sample(ctx, 6, generator=torch.Generator().manual_seed(3), stop_ids=t.stop_ids, allowed=t.allowed)
    assert a == b
    for ids, stopped in a:
        assert 1 <= len(ids) <= 6 and all(t.allowed[i] for i in ids)
    only = torch.zeros(s.vocab_size, dtype=torch.bool)
    only[[9, 10]] = True
    got = sample(ctx * 4, 5, generator=torch.Generator().manual_seed(0), allowed=only)
    assert all(set(ids) <= {9, 10} and len(ids) == 5 and not stopped for ids, stopped in got)
    greedy = sample(ctx, 4, temperature=0)
    assert greedy == sample(ctx, 4, temperature=0)
    # a context alone draws what it draws in a batch (left padding and the mask keep rows apart)
    alone = sample(ctx[1:], 4, temperature=0)
    assert alone[0] == greedy[1]


def test_sample_tokens_matches_generate_on_the_same_seed():
    """The one decoding loop draws what transformers' generate draws (top_k=0, top_p=1, seeded alike)."""
    s = make_scorer("mistral")
    t = s.target("prompt", "what is")
    ctx = [t.context_ids, t.context_ids + (9, 10)]
    eos = s.tokenizer.eos_token_id
    for min_new in (0, 1):
        torch.manual_seed(11)
        ids = torch.full((2, len(ctx[1])), s.pad_id)
        ids[0, 2:], ids[1] = torch.tensor(ctx[0]), torch.tensor(ctx[1])
        mask = (torch.arange(ids.shape[1])[None] >= torch.tensor([[2], [0]])).long()
        gen = s.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                               max_new_tokens=8, min_new_tokens=min_new, pad_token_id=s.pad_id, eos_token_id=eos)
        want = []
        for row in gen[:, ids.shape[1]:].tolist():
            want.append((tuple(row[:row.index(eos)]), True) if eos in row else (tuple(row), False))
        got = sample_tokens(s.model, ctx, 8, pad_id=s.pad_id, generator=torch.Generator().manual_seed(11),
                            stop_ids=[eos], min_new_tokens=min_new)
        assert got == want


def test_sequence_logprobs_match_a_manual_sum_and_ignore_batching():
    s = make_scorer("mistral")
    tok, eos = s.tokenizer, s.tokenizer.eos_token_id
    rows = [encode_conversation(tok, p, c) for p, c in (("what is two plus three", "the answer is five"),
                                                         ("hello", "good"), ("list some animals", "cat dog bird"))]
    got = sequence_logprobs(s.model, rows, pad_id=s.pad_id, eos_id=eos, batch_size=2)  # [3], padded batches
    for i, row in enumerate(rows):
        logits = s.model(input_ids=torch.tensor([row.ids])).logits[0]  # [seq, vocab], one row, no padding
        a, b = row.completion
        assert row.ids[b] == eos  # the end-of-turn token follows, and counts
        want = sum(float(torch.log_softmax(logits[t - 1], -1)[row.ids[t]]) for t in range(a, b + 1))
        assert float(got[i]) == pytest.approx(want, abs=1e-4)
    mean = sequence_logprobs(s.model, rows, [r.completion for r in rows], pad_id=s.pad_id, mean=True)
    assert float(mean[1]) == pytest.approx(float(s.span_logprob(rows[1:2], [rows[1].completion])[0]), abs=1e-6)
    # the one-hot form of the targets gives the same numbers as the ids
    ids = torch.tensor([rows[0].ids])
    logits = s.model(input_ids=ids).logits
    one_hot = torch.nn.functional.one_hot(ids, logits.shape[-1]).float()
    span = [rows[0].completion]
    assert torch.allclose(span_logprobs(logits, ids, span), span_logprobs(logits, one_hot, span), atol=1e-6)


def test_sample_completions_are_seeded_per_batch():
    s = make_scorer("mistral")
    prompts = ["what is two plus three", "hello", "list some animals please"]
    a = sample_completions(s.model, s.tokenizer, prompts, 3, seed=4, max_new_tokens=6, batch_size=4)
    torch.manual_seed(123)  # the global RNG plays no part
    torch.rand(7)
    b = sample_completions(s.model, s.tokenizer, prompts, 3, seed=4, max_new_tokens=6, batch_size=4)
    assert a == b and [len(x) for x in a] == [3, 3, 3]
    assert all(1 <= c.n_tokens <= 6 and (c.ended or c.n_tokens == 6) for x in a for c in x)
    assert sample_completions(s.model, s.tokenizer, prompts, 3, seed=5, max_new_tokens=6, batch_size=4) != a


def test_from_file_loads_model_named_by_probe(tiny_search, tmp_path):
    model_dir, probe_path = tiny_search
    s = ProbeScorer.from_file(probe_path)
    assert s.hook.name == HOOK and s.model.config.hidden_size == 32
    assert s.score_texts(["what is two"]).shape == (1,)
    pt = tmp_path / "p.pt"
    save_probe(pt, s.probe.cpu(), {**s.metadata})
    assert torch.allclose(ProbeScorer.from_file(pt).score_texts(["hello"]), s.score_texts(["hello"]))


def test_bad_probes_are_refused_with_one_line(tiny_search, tmp_path):
    model_dir, _ = tiny_search
    wide = tmp_path / "wide.pt"
    save_probe(wide, make_probe("linear", 64), {"model": str(model_dir), "hook": HOOK, "position": "-1"})
    with pytest.raises(RsearchError, match="different model.*d_model 64"):
        ProbeScorer.from_file(wide)
    deep = tmp_path / "deep.pt"
    save_probe(deep, make_probe("linear", 32), {"model": str(model_dir), "hook": "blocks.9.hook_resid_pre"})
    with pytest.raises(RsearchError, match="different model.*layer"):
        ProbeScorer.from_file(deep)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a probe")
    with pytest.raises(RsearchError) as e:
        ProbeScorer.from_file(junk)
    assert "\n" not in str(e.value)
    with pytest.raises(RsearchError, match="hook"):
        ProbeScorer(make_probe("linear", 32), tiny_model("llama"), tiny_tokenizer(), metadata={})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("position", ["user_end", "-1"])
def test_a_shared_prefix_is_run_once_and_changes_no_score(arch, position):
    s = make_scorer(arch, position=position)
    t = s.target("prompt", "what is two plus", position=position)
    spans = [(5, 6, 7), (8,), (9, 10, 11, 12)]
    rows = [t.row(span) for span in spans]
    ranges = [t.span_range(span) for span in spans]
    calls = []
    handle = s.model.get_input_embeddings().register_forward_hook(lambda m, a, out: calls.append(a[0].shape))
    shared = s.score_rows(rows, spans=ranges)
    handle.remove()
    s.share_prefix = False
    whole = s.score_rows(rows, spans=ranges)
    torch.testing.assert_close(shared.probe, whole.probe, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.logprob, whole.logprob, atol=1e-5, rtol=1e-5)
    prefix = len(t.prefix_ids) - 1  # the span's first token is predicted from the prefix's last
    assert calls[0] == (1, prefix) and all(c[1] <= max(len(r) for r in rows) - prefix + 1 for c in calls[1:])
