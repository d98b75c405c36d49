import pytest
import torch

from rsearch.activations import collate
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.hooks import capture, decoder_layers, parse_hook, run_forward
from tiny import ARCHS, tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
CONVS = [("what is two plus three please", "the answer is five"), ("hello", "nice"),
         ("list some animals", "cat dog bird cat dog")]


def _rows():
    return [encode_conversation(TOK, p, c) for p, c in CONVS]


def test_parse_hook_long_and_short_names():
    assert parse_hook("24.resid_pre").name == "blocks.24.hook_resid_pre"
    assert parse_hook("blocks.3.hook_resid_post").layer == 3
    with pytest.raises(RsearchError, match="unknown hook point"):
        parse_hook("blocks.3.attn_out")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_every_hook_matches_hidden_states(arch, side):
    model = tiny_model(arch, vocab_size=len(TOK))
    batch = collate(_rows(), TOK.pad_token_id, side)
    with torch.no_grad():
        hs = model(**batch.model_inputs("cpu"), output_hidden_states=True).hidden_states
        n = len(decoder_layers(model))
        names = [f"blocks.{L}.hook_resid_{k}" for L in range(n) for k in ("pre", "post")]
        with capture(model, names) as acts:
            run_forward(model, **batch.model_inputs("cpu"))
    mask = batch.attention_mask.bool()
    for L in range(n):
        torch.testing.assert_close(acts[f"blocks.{L}.hook_resid_pre"][mask], hs[L][mask], atol=1e-5, rtol=0)
        if L < n - 1:
            torch.testing.assert_close(acts[f"blocks.{L}.hook_resid_post"][mask], hs[L + 1][mask], atol=1e-5, rtol=0)
    # HF's last hidden state has the final norm applied; the raw residual does not
    assert (acts[f"blocks.{n - 1}.hook_resid_post"][mask] - hs[n][mask]).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_side_does_not_change_activations(arch):
    model = tiny_model(arch, vocab_size=len(TOK))
    rows = _rows()
    out = {}
    for side in ("left", "right"):
        b = collate(rows, TOK.pad_token_id, side)
        with torch.no_grad(), capture(model, ["1.resid_post"]) as acts:
            run_forward(model, **b.model_inputs("cpu"))
        out[side] = [acts["blocks.1.hook_resid_post"][i, b.attention_mask[i].bool()] for i in range(len(rows))]
    for a, b in zip(out["left"], out["right"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_capture_stops_after_deepest_hook_and_removes_hooks():
    model = tiny_model("mistral", vocab_size=len(TOK), n_layers=4)
    layers = decoder_layers(model)
    ran = []
    probes = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    batch = collate(_rows(), TOK.pad_token_id)
    with torch.no_grad(), capture(model, ["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"]) as acts:
        run_forward(model, **batch.model_inputs("cpu"))
    assert ran == [0, 1] and set(acts) == {"blocks.1.hook_resid_post", "blocks.0.hook_resid_pre"}
    for p in probes:
        p.remove()
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)


def test_capture_removes_hooks_when_the_block_raises():
    model = tiny_model("llama", vocab_size=len(TOK))
    with pytest.raises(ValueError):
        with capture(model, ["0.resid_pre"]):
            raise ValueError("boom")
    assert all(not layer._forward_pre_hooks for layer in decoder_layers(model))


def test_missing_layer_is_a_clear_error():
    model = tiny_model("qwen2", vocab_size=len(TOK), n_layers=2)
    with pytest.raises(RsearchError, match="does not exist"):
        with capture(model, ["blocks.5.hook_resid_pre"]):
            pass
