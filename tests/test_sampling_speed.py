"""The fast decode loop gives the plain loop's tokens for the same seeds: static KV cache, finished rows
leaving the batch, several seed batches decoded as one (equivalence, not timing)."""
from __future__ import annotations

import pytest
import torch

from rsearch.lm import fast_sample_tokens, sample_completions, sample_tokens
from tiny import ARCHS, save_tiny_model, tiny_model

STOPS = [2, 9, 11]  # frequent enough in a 40-token vocabulary that rows finish at different steps


def contexts(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (n,), generator=g)
    return [torch.randint(7, 40, (int(m),), generator=g).tolist() for m in lengths]


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_loop_matches_plain_loop(arch):
    model = tiny_model(arch, vocab_size=40)
    ctx = contexts(13, seed=1)
    kw = dict(pad_id=0, stop_ids=STOPS, min_new_tokens=[1, 3, 0, 2] + [1] * 9)
    plain = sample_tokens(model, ctx, 30, generator=torch.Generator().manual_seed(5), **kw)
    fast = fast_sample_tokens(model, ctx, 30, generator=torch.Generator().manual_seed(5), **kw)
    growing = fast_sample_tokens(model, ctx, 30, generator=torch.Generator().manual_seed(5), static_cache=False, **kw)
    assert fast == plain and growing == plain
    lengths = {len(toks) for toks, _ in plain}
    assert len(lengths) > 3 and any(ended for _, ended in plain) and not all(ended for _, ended in plain)


def test_greedy_and_allowed_tokens_match():
    model = tiny_model("mistral", vocab_size=40)
    ctx = contexts(6, seed=2)
    allowed = torch.zeros(40, dtype=torch.bool)
    allowed[10:30] = True
    for kw in (dict(temperature=0.0), dict(allowed=allowed, temperature=0.7)):
        plain = sample_tokens(model, ctx, 12, pad_id=0, stop_ids=STOPS, generator=torch.Generator().manual_seed(3),
                              **kw)
        fast = fast_sample_tokens(model, ctx, 12, pad_id=0, stop_ids=STOPS,
                                  generator=torch.Generator().manual_seed(3), **kw)
        assert fast == plain
    assert all(10 <= t < 30 for toks, _ in plain for t in toks)


def test_seed_batches_decoded_together_match_one_at_a_time():
    model = tiny_model("llama", vocab_size=40)
    ctx_a, ctx_b = contexts(5, seed=3), contexts(7, seed=4)
    kw = dict(pad_id=0, stop_ids=STOPS)
    alone = (sample_tokens(model, ctx_a, 20, generator=torch.Generator().manual_seed(10), **kw)
             + sample_tokens(model, ctx_b, 20, generator=torch.Generator().manual_seed(11), **kw))
    together = fast_sample_tokens(model, ctx_a + ctx_b, 20, groups=[(torch.Generator().manual_seed(10), 5),
                                                                   (torch.Generator().manual_seed(11), 7)], **kw)
    assert together == alone


def test_sample_completions_same_for_every_decode(tmp_path):
    from rsearch.models import load_model

    model, tok = load_model(save_tiny_model(tmp_path / "m", "mistral"), device="cpu")
    prompts = ["what is two plus three", "list some animals please", "hello", "repeat after me hello world"]
    kw = dict(seed=4, max_new_tokens=10, batch_size=3, min_new_tokens=0)
    plain = sample_completions(model, tok, prompts, 3, decode="plain", **kw)
    assert sample_completions(model, tok, prompts, 3, decode="static", **kw) == plain
    assert sample_completions(model, tok, prompts, 3, decode="static", max_batch=9, **kw) == plain
    assert sample_completions(model, tok, prompts, 3, decode="compiled", **kw) == plain  # CPU: static
    assert sample_completions(model, tok, prompts, 3, decode="static", **{**kw, "seed": 5}) != plain
    with pytest.raises(ValueError, match="decode"):
        sample_completions(model, tok, prompts, 1, decode="vllm", **kw)


def test_multinomial_is_the_exponential_race():
    """The fast loop reproduces torch.multinomial's one-sample draw; if torch changes it, this says so first."""
    probs = torch.softmax(torch.randn(8, 50, generator=torch.Generator().manual_seed(0)), -1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(1))[:, 0]
    noise = torch.empty_like(probs).exponential_(1, generator=torch.Generator().manual_seed(1))
    assert torch.equal((probs / noise).argmax(-1), want)

