"""One forward for the tokens every row of a batch shares.

A search scores many candidates that differ only inside their span: on a chat model each one carries the same
system message, the template's opening and the prefix before the span (48 tokens of SmolLM2's 70 at the default
search). The keys and values of those tokens are computed once, for one row, and every candidate's forward starts
from them (as nanoGCG's prefix cache does). The rows' own layout is unchanged: `collate`'s right-padded batch,
cut at the shared length, with the full attention mask, so positions and masks are those of the whole row.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import Tensor

from rsearch.chat import Encoded


def cache_kwarg(model) -> str | None:
    """The KV-cache argument's name (`cache` in transformers ≥ 5.2x, `past_key_values` before), or None."""
    params = inspect.signature(model.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def shared_length(rows: Sequence[Encoded], weights: Tensor, spans: Sequence[tuple[int, int]] | None) -> int:
    """How many leading tokens every row shares and no read depends on: before the first position the probe
    reads (`weights`: `[n_pos, batch, seq]` over right-padded rows), before each span's first predicted token,
    and leaving each row at least one token of its own."""
    first = rows[0].ids
    n = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        n = min(n, next((i for i, (a, b) in enumerate(zip(first[:n], r.ids[:n])) if a != b), n))
    read = (weights.sum(0) > 0).float().argmax(-1)                  # [batch] first column read
    n = min(n, int(read.min()))
    if spans is not None:
        n = min(n, min(a for a, _ in spans) - 1)
    return max(n, 0)


class PrefixCache:
    """The keys and values of one shared prefix, handed out as a fresh cache per batch.

    Args:
        model: the Hugging Face causal LM that will run the rows.
        ids: `[shared]` the shared tokens (a row's first `shared` ids).
    """

    def __init__(self, model, ids: Sequence[int]):
        from transformers import DynamicCache

        self.model, self.kwarg = model, cache_kwarg(model)
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
        self.cache_type = DynamicCache
        self.layers = [(layer.keys, layer.values) for layer in out[self.kwarg].layers]  # [1, heads, shared, hd]
        self.length = len(ids)

    def inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """A full batch's model inputs (`[batch, seq]` ids, mask, positions) → the inputs of its tokens after the
        prefix, with the prefix's cache expanded to the batch (the mask stays whole: `[batch, seq]`)."""
        b, n = inputs["input_ids"].shape[0], self.length
        cache = self.cache_type([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in self.layers],
                                config=self.model.config)
        return {"input_ids": inputs["input_ids"][:, n:], "attention_mask": inputs["attention_mask"],
                "position_ids": inputs["position_ids"][:, n:], self.kwarg: cache, "use_cache": True}
