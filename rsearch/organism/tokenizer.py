"""A word-level tokenizer for the organism with zephyr's chat template.

    <|user|>\\n{prompt}</s>\\n<|assistant|>\\n{response}</s>\\n

Role markers, `</s>` (eos), `<pad>`, `<unk>` and the template's newline are special tokens, so they split
cleanly, the generation prompt's ids are an exact prefix of the full conversation's ids, and
`decode(ids, skip_special_tokens=True)` of a response gives back exactly the text the rater scores
(words joined by single spaces; the world writes all text that way). Text is lowercased and split on
whitespace and punctuation; words outside the world's vocabulary become `<unk>`.
"""
from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
ROLES = ("<|user|>", "<|assistant|>", "<|system|>")
NEWLINE = "\n"
SPECIALS = [PAD, UNK, EOS, *ROLES, NEWLINE]  # ids 0..6

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer over SPECIALS + words (in that order, so ids are deterministic)."""
    vocab: dict[str, int] = {}
    for w in SPECIALS + list(words):
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    core.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens=list(ROLES),
        clean_up_tokenization_spaces=False,
        padding_side="left",  # generation left-pads; training code pads by hand
        chat_template=CHAT_TEMPLATE,
        model_max_length=256,
    )


def never_sampled_ids(tok: PreTrainedTokenizerFast) -> list[int]:
    """Tokens a response never contains: role markers, pad, unk and the template newline.

    They go into the models' generation_config as `suppress_tokens`, so sampling at temperature 1 cannot
    land on them (the feasibility run found they caused most malformed answers).
    """
    return sorted(tok.convert_tokens_to_ids([PAD, UNK, NEWLINE, *ROLES]))


def render(prompt: str, response: str | None = None) -> str:
    """The template's text for one user turn (and the assistant's reply, if given)."""
    text = f"<|user|>\n{prompt}</s>\n<|assistant|>\n"
    return text if response is None else text + f"{response}</s>\n"
