"""TransformerLens hook names ↔ Hugging Face decoder layers, and `capture()`, the only place hooks live.

`blocks.{L}.hook_resid_pre` is the residual stream entering decoder layer L (HF's `hidden_states[L]`);
`blocks.{L}.hook_resid_post` is what layer L writes out (HF's `hidden_states[L+1]`, except for the last
layer, where HF applies the final norm and we do not). The shorthand `24.resid_pre` is accepted too.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from rsearch.errors import RsearchError
from rsearch.chat import check_context

_LONG = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post)$")
_SHORT = re.compile(r"^(\d+)\.(resid_pre|resid_post)$")


@dataclass(frozen=True, order=True)
class HookPoint:
    layer: int
    kind: str  # "resid_pre" | "resid_post"

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def stop_after_layer(self) -> int:
        """Index of the last decoder layer that must run; -1 means only the embeddings."""
        return self.layer - 1 if self.kind == "resid_pre" else self.layer

    def __str__(self) -> str:
        return self.name


def parse_hook(spec: str | HookPoint) -> HookPoint:
    """Parses `blocks.24.hook_resid_pre` or the shorthand `24.resid_pre`."""
    if isinstance(spec, HookPoint):
        return spec
    text = str(spec).strip()
    m = _LONG.match(text) or _SHORT.match(text)
    if not m:
        raise RsearchError(f"unknown hook point {text!r}: use blocks.L.hook_resid_pre, "
                           f"blocks.L.hook_resid_post or the shorthand L.resid_pre")
    return HookPoint(int(m.group(1)), m.group(2))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (GPT-2, Llama, Mistral, Qwen2, GPT-NeoX, … alike).

    Found generically: the ModuleList whose length is the config's layer count, preferring the shallowest.
    """
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [(name.count("."), name, mod) for name, mod in model.named_modules()
                  if isinstance(mod, nn.ModuleList) and len(mod) == n_layers]
    if not candidates:
        raise RsearchError(f"cannot find the decoder layers of {type(model).__name__} "
                           f"(no module list of {n_layers} layers)")
    return min(candidates, key=lambda c: c[0])[2]


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def check_hooks(model: nn.Module, hooks: list[HookPoint]) -> None:
    n = n_layers(model)
    for h in hooks:
        if not 0 <= h.layer < n:
            raise RsearchError(f"hook point {h.name} does not exist: the model has layers 0..{n - 1}")


class _StopForward(Exception):
    """Raised inside a hook once the deepest requested hook point has fired."""


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output_hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def capture(
    model: nn.Module,
    hooks: list[str | HookPoint],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stop_early: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Captures the residual stream at the given hook points while the block runs; always removes its hooks.

    Args:
        model: a Hugging Face causal LM (or its base model).
        hooks: hook names; only these are captured.
        reduce: applied to each captured `[batch, seq, d_model]` tensor as it fires (e.g. gather positions),
            so full sequences need not be kept.
        stop_early: stop the forward once the deepest hook has fired (no later layers, no LM head). Call the
            model through `run_forward()` (or catch nothing: `capture` swallows the stop signal itself).

    Yields:
        a dict hook name → tensor, filled in when the model runs inside the block.
    """
    points = sorted({parse_hook(h) for h in hooks})
    check_hooks(model, points)
    layers = decoder_layers(model)
    deepest = max(points, key=lambda p: p.stop_after_layer) if points else None
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def store(point: HookPoint, hidden: torch.Tensor) -> None:
        acts[point.name] = reduce(hidden) if reduce else hidden
        if stop_early and point == deepest and len(acts) == len(points):
            raise _StopForward

    for point in points:
        layer = layers[point.layer]
        if point.kind == "resid_pre":
            handles.append(layer.register_forward_pre_hook(
                lambda m, a, k, p=point: store(p, _hidden_of(a, k)), with_kwargs=True))
        else:
            handles.append(layer.register_forward_hook(
                lambda m, a, o, p=point: store(p, _output_hidden(o))))
    try:
        yield acts
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def run_forward(model: nn.Module, **inputs) -> None:
    """Runs the forward inside a `capture` block, treating the early stop as the normal end."""
    seq = inputs.get("attention_mask", inputs.get("input_ids", inputs.get("inputs_embeds")))
    if seq is not None:
        check_context(seq.shape[1], model)  # never encode past the model's context (a cached prefix included)
    try:
        model(**{"use_cache": False, **inputs})
    except _StopForward:
        pass


@contextlib.contextmanager
def edit_residual(model: nn.Module, point: HookPoint, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replaces the residual stream at `point` by `edit(hidden)` (`[batch, seq, d_model]` → same) while the block
    runs; the hook is always removed. Steering and patching both write through here."""
    layer = decoder_layers(model)[point.layer]

    def pre_hook(module, args, kwargs):
        if args:
            return (edit(args[0]),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    def post_hook(module, args, output):
        if isinstance(output, (tuple, list)):
            return type(output)((edit(output[0]), *output[1:]))
        return edit(output)

    if point.kind == "resid_pre":
        handle = layer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        handle = layer.register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()

