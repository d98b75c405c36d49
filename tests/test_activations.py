import numpy as np
import torch

from rsearch.activations import build_store, extract
from rsearch.chat import encode_conversation
from rsearch.hooks import capture, run_forward
from rsearch.activations import collate
from rsearch.models import model_fingerprint
from tiny import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
ROWS = [encode_conversation(TOK, p, c) for p, c in [
    ("what is two plus three please", "the answer is five"), ("hello", "nice"), ("list some animals", "cat dog"),
    ("repeat after me", "hello world hello"), ("hello world", "good reply"), ("what is two", "five"),
    ("please list", "cat dog bird bird"), ("thank you", "you")]]


def test_extract_matches_a_single_row_forward():
    model = tiny_model("mistral", vocab_size=len(TOK))
    got = extract(model, ROWS, ["1.resid_post"], ["-1", "completion_mean"], pad_id=TOK.pad_token_id, batch_size=3)
    for i in (0, 5):
        b = collate([ROWS[i]], TOK.pad_token_id)
        with torch.no_grad(), capture(model, ["1.resid_post"]) as acts:
            run_forward(model, **b.model_inputs("cpu"))
        h = acts["blocks.1.hook_resid_post"][0]
        torch.testing.assert_close(got[("blocks.1.hook_resid_post", "-1")][i], h[-1], atol=1e-5, rtol=1e-5)
        c0, c1 = ROWS[i].completion
        torch.testing.assert_close(got[("blocks.1.hook_resid_post", "completion_mean")][i], h[c0:c1].mean(0),
                                   atol=1e-5, rtol=1e-5)


def test_resumed_store_equals_uninterrupted(tmp_path):
    model = tiny_model("llama", vocab_size=len(TOK))
    key = model_fingerprint(model)
    kw = dict(pad_id=TOK.pad_token_id, batch_size=3, progress=False, model_key=key)
    hooks, positions = ["0.resid_pre", "2.resid_post"], ["user_end", "-1"]
    whole = build_store(model, ROWS, hooks, positions, root=tmp_path / "a", **kw)
    partial = build_store(model, ROWS, hooks, positions, root=tmp_path / "b", max_batches=1, **kw)
    assert whole.complete and not partial.complete
    resumed = build_store(model, ROWS, hooks, positions, root=tmp_path / "b", **kw)
    assert resumed.complete and resumed.path == partial.path
    for hook in hooks:
        for pos in positions:
            np.testing.assert_array_equal(whole.array(hook, pos), resumed.array(hook, pos))
    again = extract(model, ROWS, hooks, positions, pad_id=TOK.pad_token_id)
    torch.testing.assert_close(resumed.tensor("2.resid_post", "-1"), again[("blocks.2.hook_resid_post", "-1")])


def test_store_is_keyed_by_model_rows_and_setting(tmp_path):
    m1, m2 = tiny_model("llama", vocab_size=len(TOK), seed=0), tiny_model("llama", vocab_size=len(TOK), seed=1)
    kw = dict(root=tmp_path, pad_id=TOK.pad_token_id, progress=False)
    a = build_store(m1, ROWS, ["0.resid_post"], ["-1"], model_key=model_fingerprint(m1), **kw)
    b = build_store(m2, ROWS, ["0.resid_post"], ["-1"], model_key=model_fingerprint(m2), **kw)
    c = build_store(m1, ROWS[:4], ["0.resid_post"], ["-1"], model_key=model_fingerprint(m1), **kw)
    d = build_store(m1, ROWS, ["0.resid_post"], ["-1"], model_key=model_fingerprint(m1), dtype="float16", **kw)
    assert len({a.path, b.path, c.path, d.path}) == 4
    assert not np.allclose(a.array("0.resid_post", "-1"), b.array("0.resid_post", "-1"))
