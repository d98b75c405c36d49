"""A throwaway word-level tokenizer sized to a model's vocabulary, for peers that insist on one."""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def tokenizer_for(model) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, model.config.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
