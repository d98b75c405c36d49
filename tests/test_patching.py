"""Patching: a model patched with its own activations is unchanged, the hook is always removed, a patch from
another model moves the DPO margin, and the null uses another pair's activations."""
import pytest
import torch

from rsearch.activations import collate
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.hooks import capture, decoder_layers
from rsearch.patching import margin_patching, patch
from tiny import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
PAIRS = [("what is two plus three please", "the answer is five", "bad"),
         ("hello", "nice reply thank you", "hello world"),
         ("list some animals", "cat dog bird", "the answer is five"),
         ("repeat after me hello", "hello", "good bad nice")]


def _pairs():
    return [(encode_conversation(TOK, p, c), encode_conversation(TOK, p, r)) for p, c, r in PAIRS]


def _hook_count(model) -> int:
    return sum(len(layer._forward_pre_hooks) + len(layer._forward_hooks) for layer in decoder_layers(model))


def _perturbed(model, seed: int, scale: float = 0.05):
    other = tiny_model("mistral", vocab_size=len(TOK))
    other.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


@pytest.mark.parametrize("kind", ["resid_pre", "resid_post"])
def test_patching_a_model_into_itself_changes_nothing(kind):
    model = tiny_model("mistral", vocab_size=len(TOK))
    rows = [r for pair in _pairs() for r in pair]
    inputs = collate(rows, TOK.pad_token_id).model_inputs("cpu")
    hook = f"blocks.1.hook_{kind}"
    with torch.no_grad():
        with capture(model, [hook], stop_early=False) as acts:
            logits = model(**inputs, use_cache=False).logits
        with patch(model, hook, acts[hook], torch.ones(inputs["input_ids"].shape, dtype=torch.bool)):
            again = model(**inputs, use_cache=False).logits
    assert torch.equal(again, logits)
    assert _hook_count(model) == 0


def test_self_patching_margins_are_exactly_unchanged():
    model = tiny_model("mistral", vocab_size=len(TOK))
    got = margin_patching(model, model, _pairs(), layers=[0, 1, 2], positions=["user_end", "completion_mean"],
                          beta=0.1, pad_id=TOK.pad_token_id, eos_id=TOK.eos_token_id, batch_size=4)
    assert got["margin"] == [0.0] * len(PAIRS)  # the same model on both sides: no margin at all
    assert len(got["effects"]) == 2 * 3 * 2
    for e in got["effects"]:
        assert e["delta"] == [0.0] * len(PAIRS)


def test_patching_moves_the_margin_and_the_null_differs():
    pre = tiny_model("mistral", vocab_size=len(TOK))
    post = _perturbed(pre, seed=3)
    got = margin_patching(pre, post, _pairs(), layers=[0, 2], positions=["user_end", "completion_mean"], beta=0.1,
                          pad_id=TOK.pad_token_id, eos_id=TOK.eos_token_id, batch_size=4, seed=1)
    assert any(abs(m) > 1e-4 for m in got["margin"])
    by = {(e["direction"], e["layer"], e["position"]): e for e in got["effects"]}
    # patching every completion token at the last layer hands the recipient most of the donor's computation
    full = by[("post_to_pre", 2, "completion_mean")]
    assert any(abs(d) > 1e-4 for d in full["delta"])
    assert full["delta"] != full["delta_null"]
    assert _hook_count(pre) == 0 and _hook_count(post) == 0


def test_patch_hook_removed_on_exception_and_bad_shapes_are_one_line():
    model = tiny_model("mistral", vocab_size=len(TOK))
    rows = [r for pair in _pairs() for r in pair]
    inputs = collate(rows, TOK.pad_token_id).model_inputs("cpu")
    shape = inputs["input_ids"].shape
    with pytest.raises(ValueError, match="boom"):
        with patch(model, "blocks.0.hook_resid_pre", torch.zeros(*shape, 32), torch.ones(shape, dtype=torch.bool)):
            raise ValueError("boom")
    assert _hook_count(model) == 0
    with pytest.raises(RsearchError, match="do not fit"):
        with torch.no_grad(), patch(model, "blocks.0.hook_resid_pre", torch.zeros(1, 2, 32),
                                    torch.ones(1, 2, dtype=torch.bool)):
            model(**inputs, use_cache=False)
    assert _hook_count(model) == 0
    with pytest.raises(RsearchError, match="at least 2"):
        margin_patching(model, model, _pairs()[:1], layers=[0], positions=["user_end"], beta=0.1,
                        pad_id=TOK.pad_token_id, eos_id=TOK.eos_token_id)


def test_null_takes_another_pairs_activation():
    from rsearch.patching import _other_source

    acts = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1).repeat(1, 1, 3)   # [2 rows, 5 positions, 3]
    idx = [[1, 2, 3], [4]]
    out = _other_source(acts, idx, donor=[1, 0])
    assert out[0, 1:4, 0].tolist() == [9.0, 9.0, 9.0]      # row 1's only patched position, at each of row 0's
    assert out[1, 4, 0].item() == 3.0                       # row 0's last patched position stands for row 1's one
    assert out[0, 0, 0].item() == 0.0 and out[1, 0, 0].item() == 5.0   # unpatched positions untouched
