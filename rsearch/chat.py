"""Conversations → token ids through the tokenizer's own chat template, with token spans that match the text.

User text is text: the template is rendered with each message's content as a placeholder, so the template's own
text and each message's content are known apart; the template's markers are special tokens, while a marker
written in a message (`</s>`, `<|assistant|>`, `<|im_start|>` …) is tokenized as ordinary text and cannot forge
a turn. The completion's tokens are found from character offsets of the rendered text, so there is no drift
between what the template wrote and the tokens that carry it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rsearch.errors import RsearchError

Message = dict  # {"role": str, "content": str}
ROLES = ("system", "user", "assistant")
_MARK = "\u2063RSEARCH_MSG{}\u2063"


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


def check_messages(messages: Sequence[Message], where: str = "") -> list[Message]:
    """The messages, refused unless each is a dict with a known role and text content."""
    at = f"{where}: " if where else ""
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RsearchError(f"{at}message {k} is not a {{role, content}} mapping")
        if m.get("role") not in ROLES:
            raise RsearchError(f"{at}message {k} has role {m.get('role')!r}: use {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise RsearchError(f"{at}message {k} ({m['role']}) has content of type {type(m.get('content')).__name__}"
                               ": it must be text")
    return list(messages)


def render_chat(tokenizer, messages: list[Message], add_generation_prompt: bool) -> str:
    """The tokenizer's chat template applied to `messages`, as text."""
    if not getattr(tokenizer, "chat_template", None):
        raise RsearchError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                           "set tokenizer.chat_template or use a chat model")
    return tokenizer.apply_chat_template(check_messages(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class Piece:
    """A run of rendered text: the template's own (message None) or the content of message `message`."""

    text: str
    message: int | None = None


def render_pieces(tokenizer, messages: list[Message], add_generation_prompt: bool) -> list[Piece]:
    """The rendered conversation cut into the template's text and each message's content (the one renderer).

    A content the template leaves out has no piece; one it writes twice, or changes other than by trimming its
    whitespace (Llama-3, Gemma), is refused: its tokens could not be told from the template's.
    """
    messages = check_messages(messages)
    marks = [_MARK.format(k) for k in range(len(messages))]
    framed = render_chat(tokenizer, [{**m, "content": marks[k]} for k, m in enumerate(messages)],
                         add_generation_prompt)
    real = render_chat(tokenizer, messages, add_generation_prompt)
    frame, rest = [], framed  # (template text before it, message index) per content the template writes
    for k, mark in enumerate(marks):
        if framed.count(mark) > 1:
            raise RsearchError(f"the chat template writes message {k}'s content more than once")
        if mark in rest:
            head, rest = rest.split(mark)
            frame.append((head, k))
    failed: set[tuple[int, int]] = set()

    def match(j: int, at: int) -> list[Piece] | None:
        """Pieces for frame[j:] read from real[at:], each content as written or trimmed."""
        if j == len(frame):
            return [Piece(rest)] if real[at:] == rest else None
        head, k = frame[j]
        if (j, at) in failed or not real.startswith(head, at):
            return None
        c = messages[k]["content"]
        for text in dict.fromkeys((c, c.strip(), c.lstrip(), c.rstrip())):
            if real.startswith(text, at + len(head)):
                tail = match(j + 1, at + len(head) + len(text))
                if tail is not None:
                    return [Piece(head), Piece(text, k)] + tail
        failed.add((j, at))
        return None

    pieces = match(0, 0)
    if pieces is None:
        raise RsearchError("the chat template does not render the message content verbatim")
    return [p for p in pieces if p.text or p.message is not None]


def _forging_ids(tokenizer) -> frozenset[int]:
    """Special ids a message's text must never become: markers, eos, pad — not unk (text it cannot spell) nor a
    special made of whitespace (the organism's newline), which are what the text is anyway."""
    ids = set(tokenizer.all_special_ids)
    for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(t, "special", False):
            ids.add(i)
    ids.discard(tokenizer.unk_token_id)
    return frozenset(i for i in ids if (tokenizer.convert_ids_to_tokens(i) or "x").strip())


@dataclass(frozen=True)
class Tokens:
    """Pieces tokenized: ids, each token's [start, end) characters in `text`, and each piece's characters."""

    ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    text: str
    pieces: tuple[Piece, ...]
    starts: tuple[int, ...]  # character where each piece starts

    def content_span(self, message: int) -> tuple[int, int] | None:
        """[start, end) tokens that carry message `message`'s content (overlap its characters), or None."""
        for p, a in zip(self.pieces, self.starts):
            if p.message == message:
                inside = [i for i, (s, e) in enumerate(self.offsets) if e > a and s < a + len(p.text) and e > s]
                return (inside[0], inside[-1] + 1) if inside else None
        return None


def _content_ranges(pieces: Sequence[Piece]) -> tuple[list[int], list[tuple[int, int]]]:
    starts, ranges, at = [], [], 0
    for p in pieces:
        starts.append(at)
        if p.message is not None and p.text:
            ranges.append((at, at + len(p.text)))
        at += len(p.text)
    return starts, ranges


def _overlaps(a: int, b: int, ranges: list[tuple[int, int]]) -> bool:
    return b > a and any(b > s and a < e for s, e in ranges)


def _as_text(tokenizer, text: str, ids: list[int], offsets: list[tuple[int, int]], ranges: list[tuple[int, int]]
             ) -> tuple[list[int], list[tuple[int, int]]]:
    """The tokens again, with every run between two of the template's own special tokens that holds a special
    token in a message's characters tokenized with special tokens split into text."""
    forging = _forging_ids(tokenizer)
    added = set(getattr(tokenizer, "added_tokens_decoder", {})) | forging
    anchors = [i for i, (t, (a, b)) in enumerate(zip(ids, offsets)) if t in added and not _overlaps(a, b, ranges)]
    out_ids, out_off, prev = [], [], -1
    for nxt in anchors + [len(ids)]:
        run = range(prev + 1, nxt)
        if any(ids[i] in forging and _overlaps(*offsets[i], ranges) for i in run):
            lo = offsets[prev][1] if prev >= 0 else 0
            hi = offsets[nxt][0] if nxt < len(ids) else len(text)
            enc = tokenizer(text[lo:hi], add_special_tokens=False, split_special_tokens=True,
                            return_offsets_mapping=True)
            out_ids += list(enc["input_ids"])
            out_off += [(a + lo, b + lo) for a, b in enc["offset_mapping"]]
        else:
            out_ids += [ids[i] for i in run]
            out_off += [offsets[i] for i in run]
        if nxt < len(ids):
            out_ids.append(ids[nxt])
            out_off.append(offsets[nxt])
        prev = nxt
    unk = tokenizer.unk_token_id
    for i, (t, (a, b)) in enumerate(zip(out_ids, out_off)):
        if t in forging and _overlaps(a, b, ranges):  # a vocabulary that spells the marker as a plain word
            if unk is None:
                raise RsearchError(f"message text {text[a:b]!r} tokenizes to a special token even as text, and the "
                                   "tokenizer has no unknown token to stand for it")
            out_ids[i] = unk
    return out_ids, out_off


def encode_pieces(tokenizer, batch: Sequence[Sequence[Piece]]) -> list[Tokens]:
    """Each list of pieces tokenized as a whole: the template's text as the tokenizer reads it, message content
    as text (a special token in it is split into ordinary tokens).

    The joined text is tokenized first, so benign text gives exactly its ordinary ids (tokenizing each piece on
    its own would not: a SentencePiece tokenizer starts a lone piece with `▁`); only a run between the template's
    own special tokens where a special token lands in a message's characters is tokenized again.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise RsearchError("rsearch needs a fast (Rust) tokenizer to align tokens with text")
    texts = ["".join(p.text for p in pieces) for pieces in batch]
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    forging = _forging_ids(tokenizer)
    out = []
    for pieces, text, ids, offsets in zip(batch, texts, enc["input_ids"], enc["offset_mapping"]):
        starts, ranges = _content_ranges(pieces)
        ids, offsets = list(ids), [tuple(o) for o in offsets]
        if any(t in forging and _overlaps(a, b, ranges) for t, (a, b) in zip(ids, offsets)):
            ids, offsets = _as_text(tokenizer, text, ids, offsets, ranges)
        out.append(Tokens(tuple(ids), tuple(offsets), text, tuple(pieces), tuple(starts)))
    return out


def encode_chat(tokenizer, messages: list[Message], add_generation_prompt: bool) -> Tokens:
    """The conversation rendered by the template and tokenized, message content as text."""
    return encode_pieces(tokenizer, [render_pieces(tokenizer, messages, add_generation_prompt)])[0]


def encode_conversation(tokenizer, prompt: list[Message] | str, completion: str | None = None) -> Encoded:
    """Tokenizes a prompt (a user message or a message list) and optionally the assistant's completion.

    Args:
        tokenizer: a fast tokenizer with a chat template.
        prompt: the user's message, or the messages before the assistant's turn.
        completion: the assistant's reply; None scores the prompt alone (ending in the generation prompt).
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if completion is None:
        ids = encode_chat(tokenizer, messages, add_generation_prompt=True).ids
        if not ids:
            raise RsearchError("the rendered prompt has no tokens")
        return Encoded(tuple(ids), len(ids) - 1, (len(ids), len(ids)))
    if not isinstance(completion, str):
        raise RsearchError(f"completion of type {type(completion).__name__}: it must be text")
    if completion == "":
        raise RsearchError("empty completion: every completion needs at least one token")
    prefix_text = render_chat(tokenizer, messages, add_generation_prompt=True)
    full = encode_chat(tokenizer, messages + [{"role": "assistant", "content": completion}], False)
    k = len(messages)
    at = next((a for p, a in zip(full.pieces, full.starts) if p.message == k), -1)
    if not full.text.startswith(prefix_text) or at < len(prefix_text):
        raise RsearchError("the chat template does not render the prompt as a prefix of the conversation")
    span = full.content_span(k)
    if span is None:
        raise RsearchError(f"completion {completion[:40]!r} produced no tokens")
    start, end = span
    if start == 0:
        raise RsearchError("the completion starts at the first token: the prompt rendered to nothing")
    return Encoded(full.ids, start - 1, (start, end))


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
