"""Steering: add a vector to the residual stream at one hook point while a model generates.

`steer(model, hook, vector)` is a context manager like `capture` (rsearch.hooks): the hook point resolves the same
way, and its hook is always removed, also when the block raises. It acts on a generation by rsearch.lm's plain
sampling loop (`sample_completions(..., **plain_decoding())`, where the sampler also offers a faster one): the first
forward of a batch is the left-padded prompt, whose last column is every row's `user_end`; each later forward
carries one new completion token per row through the KV cache. So

    positions_from="user_end"     adds the vector at the last prompt token and at every completion token;
    positions_from="completion"   adds it at the completion tokens only.

`steering_vector` makes the added vector: α × a unit direction × the typical norm of the residual stream at that
hook (`typical_norm`, measured on data), so that α means the same push for every direction — the probe's, random
ones (`random_directions`), a shuffled-label probe's.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from rsearch.activations import collate, length_sorted_batches
from rsearch.chat import Encoded
from rsearch.errors import RsearchError
from rsearch.hooks import HookPoint, capture, check_hooks, edit_residual, parse_hook, run_forward
from rsearch.lm import sample_completions

POSITIONS_FROM = ("user_end", "completion")


def plain_decoding() -> dict[str, Any]:
    """`sample_completions` keywords for its plain decoding loop, where it offers a faster one (whose batches
    change as rows finish): the loop whose forwards `steer` expects."""
    return {"decode": "plain"} if "decode" in inspect.signature(sample_completions).parameters else {}


def unit(direction: Tensor) -> Tensor:
    """`[d_model]` direction → float32 unit vector."""
    v = direction.detach().float().flatten()
    norm = float(v.norm())
    if not norm > 0:
        raise RsearchError("cannot steer along a zero direction")
    return v / norm


def random_directions(d_model: int, n: int, seed: int) -> Tensor:
    """`[n, d_model]` unit vectors drawn uniformly on the sphere (seeded)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d_model, generator=g)
    return r / r.norm(dim=1, keepdim=True)


def steering_vector(direction: Tensor, alpha: float, scale: float) -> Tensor:
    """α × scale × the unit `direction`: `[d_model]` float32 of norm |α|·scale."""
    return float(alpha) * float(scale) * unit(direction)


@torch.no_grad()
def _from_user_end(model: nn.Module, rows: Sequence[Encoded], hook: str | HookPoint, reduce, *, pad_id: int,
                   batch_size: int) -> Tensor:
    """`[tokens]` float64: `reduce` ([batch, seq, d_model] → [batch, seq]) of the residual stream at `hook`, over
    every token from each row's user_end on."""
    point = parse_hook(hook)
    check_hooks(model, [point])
    device = next(model.parameters()).device
    values = []
    for idx in length_sorted_batches(rows, batch_size):
        batch = collate([rows[i] for i in idx], pad_id)
        keep = torch.zeros(batch.input_ids.shape, dtype=torch.bool)  # [batch, seq]: user_end … last token
        for b, r in enumerate(batch.rows):
            keep[b, r.user_end:len(r)] = True
        with capture(model, [point], reduce=lambda h: reduce(h.float()).cpu()) as acts:
            run_forward(model, **batch.model_inputs(device))
        values.append(acts[point.name][keep].double())
    return torch.cat(values) if values else torch.empty(0, dtype=torch.float64)


def typical_norm(model: nn.Module, rows: Sequence[Encoded], hook: str | HookPoint, *, pad_id: int,
                 batch_size: int = 16) -> float:
    """Mean L2 norm of the residual stream at `hook` over every token from each row's user_end on.

    Args:
        rows: encoded conversations (prompt and completion), e.g. feedback pairs' chosen replies.
    """
    norms = _from_user_end(model, rows, hook, lambda h: h.norm(dim=-1), pad_id=pad_id, batch_size=batch_size)
    if norms.numel() == 0:
        raise RsearchError("no tokens to measure the activation norm on")
    return float(norms.mean())


def typical_spread(model: nn.Module, rows: Sequence[Encoded], hook: str | HookPoint, direction: Tensor, *,
                   pad_id: int, batch_size: int = 16) -> float:
    """SD of the residual stream's projection on the unit `direction` at `hook`, over every token from each row's
    user_end on: the size of a step that stays within what the model itself writes along it."""
    u = unit(direction).to(next(model.parameters()).device)
    along = _from_user_end(model, rows, hook, lambda h: h @ u, pad_id=pad_id, batch_size=batch_size)
    if along.numel() < 2:
        raise RsearchError("too few tokens to measure the activation spread on")
    return float(along.std())


def _steered(hidden: Tensor, vector: Tensor, positions_from: str) -> Tensor:
    """`[batch, seq, d_model]` with `vector` added where `positions_from` says (see the module docstring)."""
    v = vector.to(device=hidden.device, dtype=hidden.dtype)
    if hidden.shape[1] == 1:          # a decode step: one new completion token per row
        return hidden + v
    if positions_from == "completion":  # the prompt's forward holds no completion token
        return hidden
    out = hidden.clone()
    out[:, -1] = out[:, -1] + v       # the left-padded prompt's last column: each row's user_end
    return out


@contextlib.contextmanager
def steer(model: nn.Module, hook: str | HookPoint, vector: Tensor, *, positions_from: str = "user_end"
          ) -> Iterator[None]:
    """Adds `vector` to the residual stream at `hook` while the block runs a generation; always removes the hook.

    Args:
        model: a Hugging Face causal LM.
        hook: `blocks.L.hook_resid_pre` (what enters layer L) or `blocks.L.hook_resid_post` (what it writes).
        vector: `[d_model]` what to add (see `steering_vector`).
        positions_from: "user_end" or "completion" (see the module docstring).
    """
    if positions_from not in POSITIONS_FROM:
        raise RsearchError(f"positions_from: use {' or '.join(POSITIONS_FROM)}, got {positions_from!r}")
    point = parse_hook(hook)
    check_hooks(model, [point])
    d_model = model.config.hidden_size
    if vector.shape != (d_model,):
        raise RsearchError(f"steering vector of shape {tuple(vector.shape)} for a model of d_model {d_model}")

    with edit_residual(model, point, lambda hidden: _steered(hidden, vector, positions_from)):
        yield
