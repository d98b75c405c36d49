"""Conversations → token ids through the tokenizer's own chat template, with token spans that match the text.

The completion's tokens are found from character offsets of the rendered text, so there is no drift between
what the template wrote and the tokens that carry it.
"""
from __future__ import annotations

from dataclasses import dataclass

from rsearch.errors import RsearchError

Message = dict  # {"role": str, "content": str}


@dataclass(frozen=True)
class Encoded:
    """One tokenized conversation.

    ids: token ids of the whole rendered conversation (no padding).
    user_end: index of the last token before any completion token (the end of the generation prompt).
    completion: [start, end) token span of the assistant's completion text; empty (n, n) when there is none.
    """

    ids: tuple[int, ...]
    user_end: int
    completion: tuple[int, int]

    def __len__(self) -> int:
        return len(self.ids)


def render_chat(tokenizer, messages: list[Message], add_generation_prompt: bool) -> str:
    """The tokenizer's chat template applied to `messages`, as text (the one renderer; targets use it too)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RsearchError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                           "set tokenizer.chat_template or use a chat model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _token_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise RsearchError("rsearch needs a fast (Rust) tokenizer to align tokens with text")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode_conversation(tokenizer, prompt: list[Message] | str, completion: str | None = None) -> Encoded:
    """Tokenizes a prompt (a user message or a message list) and optionally the assistant's completion.

    Args:
        tokenizer: a fast tokenizer with a chat template.
        prompt: the user's message, or the messages before the assistant's turn.
        completion: the assistant's reply; None scores the prompt alone (ending in the generation prompt).
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    prefix_text = render_chat(tokenizer, messages, add_generation_prompt=True)
    if completion is None:
        ids, _ = _token_offsets(tokenizer, prefix_text)
        if not ids:
            raise RsearchError("the rendered prompt has no tokens")
        return Encoded(tuple(ids), len(ids) - 1, (len(ids), len(ids)))
    if completion == "":
        raise RsearchError("empty completion: every completion needs at least one token")
    full_text = render_chat(tokenizer, messages + [{"role": "assistant", "content": completion}], False)
    start_char = full_text.find(completion, len(prefix_text) if full_text.startswith(prefix_text) else 0)
    if not full_text.startswith(prefix_text) or start_char < 0:
        raise RsearchError("the chat template does not render the prompt as a prefix of the conversation")
    end_char = start_char + len(completion)
    ids, offsets = _token_offsets(tokenizer, full_text)
    # a token belongs to the completion when its characters overlap the completion's characters
    inside = [i for i, (a, b) in enumerate(offsets) if b > start_char and a < end_char and b > a]
    if not inside:
        raise RsearchError(f"completion {completion[:40]!r} produced no tokens")
    start, end = inside[0], inside[-1] + 1
    if start == 0:
        raise RsearchError("the completion starts at the first token: the prompt rendered to nothing")
    return Encoded(tuple(ids), start - 1, (start, end))


def encode_ids(prefix_ids: list[int], span_ids: list[int], suffix_ids: list[int], *, span_is_completion: bool) -> Encoded:
    """Assembles an Encoded row from pieces already tokenized (for token-level search)."""
    ids = tuple(prefix_ids) + tuple(span_ids) + tuple(suffix_ids)
    if span_is_completion:
        start = len(prefix_ids)
        return Encoded(ids, start - 1, (start, start + len(span_ids)))
    return Encoded(ids, len(ids) - 1, (len(ids), len(ids)))


# ----- the model's context -----

TOO_LONG = ("truncate", "drop")


def context_length(model_or_config) -> int | None:
    """Positions the model was built for (`max_position_embeddings`, GPT-2's `n_positions`), or None."""
    cfg = getattr(model_or_config, "config", model_or_config)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_length(row: Encoded, limit: int, too_long: str = "drop") -> Encoded | None:
    """`row` if it has at most `limit` tokens; else, with too_long="truncate", the row with its prompt cut from
    the left (the completion and the prompt's last token stay whole), or None when even that cannot fit or
    too_long="drop"."""
    if too_long not in TOO_LONG:
        raise RsearchError(f"too_long: use {' or '.join(TOO_LONG)}, got {too_long!r}")
    cut = len(row) - limit
    if cut <= 0:
        return row
    if too_long == "drop" or cut > row.user_end:
        return None
    return Encoded(row.ids[cut:], row.user_end - cut, (row.completion[0] - cut, row.completion[1] - cut))


def check_context(n_tokens: int, model_or_config, what: str = "a row") -> None:
    """Refuses to encode past the model's context (positions it has no embedding for, or never trained on)."""
    limit = context_length(model_or_config)
    if limit is not None and n_tokens > limit:
        raise RsearchError(f"{what} has {n_tokens} tokens, more than the model's context of {limit}")
