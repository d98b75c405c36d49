"""Activation patching between the pre- and post-RL models, measured on the DPO implicit reward margin.

`patch(model, hook, source, where)` is a context manager like `capture` (rsearch.hooks): while the block runs, the
residual stream at `hook` is replaced by `source` at the positions `where` marks; its hook is always removed.

`margin_patching` asks where the reward-relevant difference between the two models lives. For each feedback pair
the DPO implicit reward margin of chosen over rejected is

    margin = β·[(log π_post(c) − log π_pre(c)) − (log π_post(r) − log π_pre(r))]

(teacher-forced, summed over each completion and its end-of-turn token). Patching the post-RL model's residual
stream at layer L and a position into the pre-RL model's run (post → pre), or the reverse (pre → post), makes
the patched model's log-probs partly the other's, and moves the margin; if the difference that the margin
measures is carried there, the margin shrinks toward 0. The null patches the same model's activation of a
random other pair (of the same role, chosen or rejected; position by position along the completion) instead,
so a change from merely disturbing the stream is not taken for a carried difference.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from rsearch.activations import collate
from rsearch.chat import Encoded
from rsearch.errors import RsearchError
from rsearch.hooks import HookPoint, capture, check_hooks, edit_residual, parse_hook, run_forward
from rsearch.lm import batch_logprobs, completion_span, device_of
from rsearch.positions import parse_position, token_indices

DIRECTIONS = ("post_to_pre", "pre_to_post")


@contextlib.contextmanager
def patch(model: nn.Module, hook: str | HookPoint, source: Tensor, where: Tensor) -> Iterator[None]:
    """Replaces the residual stream at `hook` by `source` where `where` is True; always removes the hook.

    Args:
        source: `[batch, seq, d_model]` values, laid out like the patched run's (same padding).
        where: `[batch, seq]` bool, the positions to patch.
    """
    point = parse_hook(hook)
    check_hooks(model, [point])

    def mixed(hidden: Tensor) -> Tensor:
        if hidden.shape[:2] != where.shape or source.shape != hidden.shape:
            raise RsearchError(f"patch at {point.name}: source {tuple(source.shape)} and mask {tuple(where.shape)} "
                               f"do not fit the run's {tuple(hidden.shape)}")
        w = where.to(hidden.device)[..., None]
        return torch.where(w, source.to(device=hidden.device, dtype=hidden.dtype), hidden)

    with edit_residual(model, point, mixed):
        yield


def _positions_mask(rows: Sequence[Encoded], position: str, seq: int) -> tuple[Tensor, list[list[int]]]:
    """`[batch, seq]` bool of the tokens `position` reads in each (right-padded) row, and those indices.
    A position that reads several tokens (completion_mean) marks all of them."""
    pos = parse_position(position)
    where = torch.zeros(len(rows), seq, dtype=torch.bool)
    idx = [token_indices(pos, r, b) for b, r in enumerate(rows)]
    for b, i in enumerate(idx):
        where[b, i] = True
    return where, idx


def _other_source(acts: Tensor, idx: list[list[int]], donor: Sequence[int]) -> Tensor:
    """`[batch, seq, d]`: at row b's patched indices, row donor[b]'s activations at its own indices, matched
    by relative place (the k-th of n indices takes the donor's round(k·(m−1)/(n−1))-th of m)."""
    out = acts.clone()
    for b, d in enumerate(donor):
        n, m = len(idx[b]), len(idx[d])
        pick = [idx[d][round(k * (m - 1) / (n - 1))] if n > 1 else idx[d][-1] for k in range(n)]
        out[b, idx[b]] = acts[d, pick]
    return out


@torch.no_grad()
def _acts(model, inputs: dict[str, Tensor], hook: str) -> Tensor:
    """`[rows, seq, d_model]` the residual stream at `hook` (the forward stops there)."""
    with capture(model, [hook]) as acts:
        run_forward(model, **inputs)
    return acts[hook]


def margin_patching(pre: nn.Module, post: nn.Module, pairs: Sequence[tuple[Encoded, Encoded]], *,
                    layers: Sequence[int], positions: Sequence[str], beta: float, pad_id: int, eos_id: int | None,
                    hook_kind: str = "resid_pre", batch_size: int = 16, seed: int = 0) -> dict[str, Any]:
    """Per direction × layer × position, each pair's change of the DPO margin under the patch and under the null.

    Args:
        pre, post: the two models (one tokenizer).
        pairs: (chosen, rejected) encoded conversations of one prompt each.
        layers: layers whose `hook_kind` hook is patched, one at a time.
        positions: position specs (rsearch.positions) patched, one at a time.
        batch_size: pairs per forward (at least 2: the null's donor is another pair of the batch).

    Returns:
        {"margin": `[n_pairs]` list, "effects": [{direction, layer, hook, position, delta: `[n_pairs]`,
        delta_null: `[n_pairs]`}]}: delta = patched margin − margin.
    """
    if len(pairs) < 2:
        raise RsearchError("patching needs at least 2 feedback pairs (the null patches another pair's activation)")
    hooks = [HookPoint(L, hook_kind).name for L in layers]
    check_hooks(pre, [parse_hook(h) for h in hooks])
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pairs), generator=gen).tolist()
    size = max(2, batch_size)
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # the null needs another pair in the batch
        batches[-2] += batches.pop()
    margin = torch.zeros(len(pairs))
    deltas: dict[tuple[str, int, str], tuple[Tensor, Tensor]] = {
        (d, L, p): (torch.zeros(len(pairs)), torch.zeros(len(pairs))) for d in DIRECTIONS for L in layers
        for p in positions}
    device = device_of(post)
    for chunk in batches:
        m = len(chunk)
        rows = [pairs[i][0] for i in chunk] + [pairs[i][1] for i in chunk]  # chosen rows, then rejected rows
        spans = [completion_span(r, eos_id) for r in rows]
        inputs = collate(rows, pad_id).model_inputs(device)
        lp = {m: batch_logprobs(model, rows, spans, pad_id=pad_id) for m, model in (("pre", pre), ("post", post))}

        def margins(lp_pre: Tensor, lp_post: Tensor) -> Tensor:  # [m]
            d = lp_post - lp_pre
            return beta * (d[:m] - d[m:])

        base = margins(lp["pre"], lp["post"])
        margin[chunk] = base
        shift = list(range(1, m)) + [0]                  # pair j's donor: the batch's next pair, same role
        donor = shift + [m + j for j in shift]
        seq = inputs["input_ids"].shape[1]
        masks = {p: _positions_mask(rows, p, seq) for p in positions}
        for L, hook in zip(layers, hooks):  # one layer's activations in memory at a time
            acts = {"pre": _acts(pre, inputs, hook), "post": _acts(post, inputs, hook)}
            for p, (where, idx) in masks.items():
                for direction in DIRECTIONS:
                    src, dst = ("post", "pre") if direction == "post_to_pre" else ("pre", "post")
                    recipient = pre if dst == "pre" else post
                    got = []
                    for source in (acts[src], _other_source(acts[src], idx, donor)):
                        with patch(recipient, hook, source, where):
                            patched = batch_logprobs(recipient, rows, spans, pad_id=pad_id)
                        got.append(margins(patched, lp["post"]) if dst == "pre" else margins(lp["pre"], patched))
                    deltas[(direction, L, p)][0][chunk] = got[0] - base
                    deltas[(direction, L, p)][1][chunk] = got[1] - base
    effects = [{"direction": d, "layer": L, "hook": HookPoint(L, hook_kind).name, "position": p,
                "delta": deltas[(d, L, p)][0].tolist(), "delta_null": deltas[(d, L, p)][1].tolist()}
               for d in DIRECTIONS for L in layers for p in positions]
    return {"margin": margin.tolist(), "effects": effects}
