import pytest
import torch

from rsearch.activations import collate
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.positions import parse_position, position_weights, token_indices
from tiny import tiny_tokenizer

TOK = tiny_tokenizer()


def _tokens(row, idx):
    return [TOK.convert_ids_to_tokens(row.ids[i]) for i in idx]


def test_zephyr_template_spans_land_on_the_intended_tokens():
    row = encode_conversation(TOK, "what is two plus three please", "the answer is five")
    assert TOK.convert_ids_to_tokens(list(row.ids))[: row.user_end + 1][-1] == "<|assistant|>"
    assert _tokens(row, range(*row.completion)) == ["the", "answer", "is", "five"]
    assert _tokens(row, token_indices(parse_position("user_end"), row)) == ["<|assistant|>"]
    assert _tokens(row, token_indices(parse_position("completion_start"), row)) == ["the"]
    assert _tokens(row, token_indices(parse_position("completion_end"), row)) == ["five"]
    assert _tokens(row, token_indices(parse_position("completion_frac:1"), row)) == ["five"]
    assert _tokens(row, token_indices(parse_position("completion_frac:0.34"), row)) == ["answer"]
    assert _tokens(row, token_indices(parse_position("-1"), row)) == ["</s>"]
    assert _tokens(row, token_indices(parse_position("0"), row)) == ["<|user|>"]
    assert len(token_indices(parse_position("completion_mean"), row)) == 4


def test_generation_prompt_is_an_exact_prefix():
    prompt = encode_conversation(TOK, "hello world")
    full = encode_conversation(TOK, "hello world", "nice reply")
    assert full.ids[: len(prompt.ids)] == prompt.ids
    assert prompt.user_end == full.user_end == len(prompt.ids) - 1


@pytest.mark.parametrize("side", ["left", "right"])
def test_weights_follow_padding(side):
    rows = [encode_conversation(TOK, "hello", "nice"), encode_conversation(TOK, "what is two plus three", "five")]
    batch = collate(rows, TOK.pad_token_id, side)
    w = position_weights([parse_position("-1"), parse_position("completion_mean")], rows,
                         batch.input_ids.shape[1], batch.left_pad)
    assert torch.allclose(w.sum(-1), torch.ones(2, 2))
    for b, row in enumerate(rows):
        last = int(w[0, b].argmax())
        assert batch.input_ids[b, last] == row.ids[-1] and batch.attention_mask[b, last] == 1
        assert (w[1, b] > 0).sum() == row.completion[1] - row.completion[0]


def test_bad_positions_name_the_problem():
    row = encode_conversation(TOK, "hello", "nice")
    with pytest.raises(RsearchError, match="out of range for row 3"):
        token_indices(parse_position("40"), row, row_number=3)
    with pytest.raises(RsearchError, match="unknown position"):
        parse_position("completion_frac:1.5")
    with pytest.raises(RsearchError, match="needs a completion"):
        token_indices(parse_position("completion_start"), encode_conversation(TOK, "hello"))
    with pytest.raises(RsearchError, match="empty completion"):
        encode_conversation(TOK, "hello", "")


def test_tokenizer_without_template_is_a_clear_error():
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(RsearchError, match="no chat template"):
        encode_conversation(tok, "hello", "nice")
