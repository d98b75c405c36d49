"""Search targets: where the searched span sits in the chat template, spliced in at the token level.

A target turns a searched span (token ids) into a full conversation row the scorer reads:

    prompt      <|user|>\\n{prompt_prefix}[SPAN]</s>\\n<|assistant|>\\n      scored at user_end
                the user's message is prompt_prefix + SPAN; the probe reads the model's expected reward
                before it answers. Sampling continues the user's own turn (the template up to the user's
                partial content, not closed).
    completion  <|user|>\\n{prompt}</s>\\n<|assistant|>\\n[SPAN]</s>\\n       scored at the completion's end
                reward-guided decoding: the assistant's answer to a fixed prompt is searched.

The template is rendered once and cut around the searched message's content, so the tokens before and after the
span are fixed and a token-level search (GCG, beam) splices span ids between them. Text enters a target only as a whole
message: `encode_continuation(text)` renders the prefix joined to the text (one space between them where
neither side has whitespace) inside the template, tokenizes that as a whole and keeps the span's share of it,
so prefix `Explain` + `what is …` is `Explain what is …` on any tokenizer; and `roundtrips(span)` holds when
the message a span reads as tokenizes back to that same row, so a search keeps only spans that are what a
user typing the message would send. An empty prompt prefix searches from the start of the user's message. The
prefix and every message are user text, tokenized as text (see rsearch.chat): a marker in them is not a turn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from rsearch.chat import Encoded, Piece, encode_ids, encode_pieces, render_chat, render_pieces
from rsearch.errors import RsearchError
from rsearch.positions import Position, parse_position

KINDS = ("prompt", "completion")


def join_message(prefix: str, text: str) -> str:
    """`prefix` continued by `text`, with one space between them unless either is empty or has whitespace there."""
    if not prefix or not text or prefix[-1].isspace() or text[0].isspace():
        return prefix + text
    return f"{prefix} {text}"


def _cut(tokenizer, messages: list[dict], add_generation_prompt: bool) -> tuple[tuple[Piece, ...], tuple[Piece, ...]]:
    """The rendered conversation's pieces before and after the last message's content."""
    pieces = render_pieces(tokenizer, messages, add_generation_prompt)
    k = next((i for i, p in enumerate(pieces) if p.message == len(messages) - 1), None)
    if k is None:
        raise RsearchError("the chat template does not render the searched message's content")
    return tuple(pieces[:k]), tuple(pieces[k + 1:])


def _text(pieces) -> str:
    return "".join(p.text for p in pieces)


def allowed_token_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """`[vocab_size]` bool: ids that are real, non-special tokens of the tokenizer (searchable, samplable)."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    n = min(vocab_size, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    for i, tok in enumerate(tokens):
        if tok is not None and i not in special:
            mask[i] = True
    return mask


@dataclass(frozen=True)
class Target:
    """One search's frame: the tokens around the span, how it is scored, and how spans are sampled.

    Build with `make_target(kind, tokenizer, prompt_prefix, vocab_size)`.
    """

    kind: str                       # "prompt" | "completion"
    prompt_prefix: str
    prefix_ids: tuple[int, ...]     # template tokens before the span (incl. prompt_prefix's tokens)
    suffix_ids: tuple[int, ...]     # template tokens after the span
    content_start: int              # index in prefix_ids where the searched message's text starts
    stop_ids: frozenset[int]        # tokens that end the span when sampling (end of turn, eos)
    position: Position              # where the probe reads
    tokenizer: object = field(repr=False, compare=False)
    allowed: torch.Tensor = field(repr=False, compare=False)  # [vocab] bool
    allowed_ids: frozenset[int] = field(repr=False, compare=False, default=frozenset())  # the same, as a set
    before: tuple[Piece, ...] = ()  # the rendered conversation before the searched message's text
    after: tuple[Piece, ...] = ()   # the rendered conversation after it

    @property
    def before_text(self) -> str:
        return _text(self.before)

    @property
    def after_text(self) -> str:
        return _text(self.after)

    @property
    def _message_index(self) -> int:
        return 0 if self.kind == "prompt" else 1

    # ----- rows -----

    def row(self, span_ids: Sequence[int]) -> Encoded:
        """The whole conversation with the span spliced in, positions set for this target."""
        return encode_ids(list(self.prefix_ids), list(span_ids), list(self.suffix_ids),
                          span_is_completion=self.kind == "completion")

    def span_range(self, span_ids: Sequence[int]) -> tuple[int, int]:
        """[start, end) of the span inside `row(span_ids).ids`."""
        return len(self.prefix_ids), len(self.prefix_ids) + len(span_ids)

    @property
    def context_ids(self) -> tuple[int, ...]:
        """What sampling conditions on: the template up to the span (the user's turn left open for `prompt`)."""
        return self.prefix_ids

    # ----- text -----

    def decode(self, span_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(span_ids), skip_special_tokens=False)

    def encode(self, span_text: str) -> tuple[int, ...]:
        """The text's ids on its own, as text (to check its tokens; a span of a message comes from
        `encode_continuation`)."""
        return encode_pieces(self.tokenizer, [[Piece(span_text, self._message_index)]])[0].ids

    def message(self, text: str) -> str:
        """The searched message with `text` as its span: the prefix joined to it (prompt) or the text (completion)."""
        return join_message(self.prompt_prefix, text) if self.kind == "prompt" else text

    def full_text(self, span_ids: Sequence[int]) -> str:
        """The searched message as a user would read it: the prompt (prompt target) or the answer (completion).

        A prompt span's text is read in context (decoded after the prefix's tokens), so it keeps the spacing the
        tokenizer gives it there; the prefix itself is the text it was given.
        """
        if self.kind == "prompt" and self.content_start < len(self.prefix_ids):
            head = list(self.prefix_ids[self.content_start:])
            before, both = self.decode(head), self.decode(head + list(span_ids))
            if both.startswith(before):
                return self.prompt_prefix + both[len(before):]
        return self.message(self.decode(span_ids))

    def message_spans(self, messages: Sequence[str]) -> list[tuple[int, ...] | None]:
        """Per message: the span ids it gives when rendered in the template and tokenized as a whole, or None when
        the whole's tokens are not this target's prefix + a non-empty span + suffix (e.g. the text merges with
        the prefix's last token, or the message does not start with the prefix)."""
        k = self._message_index
        batch = [self.before + (Piece(message, k),) + self.after for message in messages]
        head, tail = len(self.prefix_ids), len(self.suffix_ids)
        out: list[tuple[int, ...] | None] = []
        for ids in (t.ids for t in encode_pieces(self.tokenizer, batch)):
            end = len(ids) - tail
            ok = end > head and tuple(ids[:head]) == self.prefix_ids and tuple(ids[end:]) == self.suffix_ids
            out.append(tuple(ids[head:end]) if ok else None)
        return out

    def encode_continuation(self, text: str) -> tuple[int, ...] | None:
        """The span ids of `text` continuing the prefix (`message(text)` tokenized as a whole), or None."""
        return self.message_spans([self.message(text)])[0]

    def roundtrip_mask(self, spans: Sequence[Sequence[int]]) -> list[bool]:
        """Per span: whether the message it reads as (`full_text`) tokenizes back to exactly this row."""
        got = self.message_spans([self.full_text(s) for s in spans])
        return [g == tuple(s) for g, s in zip(got, spans)]

    def roundtrips(self, span_ids: Sequence[int]) -> bool:
        """True if the span's message, rendered and tokenized as a whole, gives the same row (GCG's filter)."""
        return self.roundtrip_mask([span_ids])[0]

    def valid(self, span_ids: Sequence[int]) -> bool:
        """Non-empty, and every id is a real non-special token."""
        return bool(span_ids) and all(i in self.allowed_ids for i in span_ids)


def default_position(kind: str, probe_position: Position | str | None) -> Position:
    """`user_end` for a prompt; for a completion, the probe's own position if it reads a completion, else its end."""
    if kind == "prompt":
        return parse_position("user_end")
    p = parse_position(probe_position) if probe_position is not None else None
    return p if p is not None and p.needs_completion else parse_position("completion_end")


def make_target(
    kind: str,
    tokenizer,
    prompt_prefix: str,
    vocab_size: int,
    *,
    position: str | Position | None = None,
    probe_position: str | Position | None = None,
    allowed: torch.Tensor | None = None,
) -> Target:
    """Builds the frame of one search.

    Args:
        kind: "prompt" (search the rest of the user's message) or "completion" (search the assistant's answer).
        tokenizer: a fast tokenizer with a chat template.
        prompt_prefix: the user's message so far (prompt; "" searches from its start) or the whole user message
            (completion).
        vocab_size: the model's vocabulary size (embedding rows), which may exceed the tokenizer's.
        position: where the probe reads; default `user_end` (prompt) or the completion's end.
        probe_position: the probe's trained position, used as the completion target's default.
        allowed: precomputed `allowed_token_mask` (it is cached by the scorer).
    """
    if kind not in KINDS:
        raise RsearchError(f"unknown target {kind!r}: use prompt or completion")
    if not isinstance(prompt_prefix, str) or (prompt_prefix and not prompt_prefix.strip()):
        raise RsearchError(f"whitespace-only prefix {prompt_prefix!r}: give text, or an empty prefix to search from "
                           "the start of the user's message")
    if kind == "completion" and not prompt_prefix:
        raise RsearchError("empty prefix: the completion target needs the user's message to answer")
    pos = parse_position(position) if position is not None else default_position(kind, probe_position)
    if kind == "prompt" and pos.needs_completion:
        raise RsearchError(f"position {pos} reads a completion, but the prompt target has none: "
                           "use user_end or a negative index")
    if kind == "prompt":
        # the frame is rendered around a stand-in message; the prefix is spliced in as the message's text
        before, after = _cut(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True)
        head = encode_pieces(tokenizer, [before + (Piece(prompt_prefix, 0),)])[0]
        prefix_ids = list(head.ids)
        n = len(_text(before))
        content_start = next((i for i, (a, b) in enumerate(head.offsets) if b > n and b > a), len(prefix_ids))
    else:
        messages = [{"role": "user", "content": prompt_prefix}]
        gen_prompt = render_chat(tokenizer, messages, add_generation_prompt=True)
        before, after = _cut(tokenizer, messages + [{"role": "assistant", "content": "x"}], False)
        if _text(before) != gen_prompt:
            raise RsearchError("the chat template does not render the generation prompt as a prefix of the answer")
        prefix_ids = list(encode_pieces(tokenizer, [before])[0].ids)
        content_start = len(prefix_ids)
    suffix_ids = list(encode_pieces(tokenizer, [after])[0].ids)
    if not prefix_ids:
        raise RsearchError("the rendered prompt has no tokens")
    if allowed is None:
        allowed = allowed_token_mask(tokenizer, vocab_size)
    stops = {i for i in (getattr(tokenizer, "eos_token_id", None),) if i is not None}
    if suffix_ids and suffix_ids[0] in set(tokenizer.all_special_ids):
        stops.add(suffix_ids[0])  # the template's end-of-turn token
    allowed_ids = frozenset(torch.nonzero(allowed).flatten().tolist())
    return Target(kind, prompt_prefix, tuple(prefix_ids), tuple(suffix_ids), content_start, frozenset(stops), pos,
                  tokenizer, allowed, allowed_ids, before, after)
