"""Probe models: a linear probe and a one-hidden-layer MLP, both standardizing their input."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rsearch.errors import RsearchError

KINDS = ("linear", "mlp")


class Probe(nn.Module):
    """A score on residual-stream activations. Standardization (mean, std) lives in buffers."""

    kind: str = ""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model < 1:
            raise RsearchError(f"d_model must be positive, got {d_model}")
        self.d_model = int(d_model)
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("std", torch.ones(d_model))

    def set_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Args: mean [d_model], std [d_model] of the training activations."""
        self.mean.copy_(mean)
        self.std.copy_(std)

    def standardize(self, x: Tensor) -> Tensor:
        """[..., d_model] any float dtype -> [..., d_model] in the probe's dtype."""
        if x.shape[-1] != self.d_model:
            raise RsearchError(f"probe expects d_model {self.d_model}, got activations of width {x.shape[-1]}")
        return (x.to(self.mean.dtype) - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """[..., d_model] -> [...] raw score; differentiable w.r.t. x."""
        return self.score_standardized(self.standardize(x))

    def score_standardized(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def direction(self, x: Tensor | None = None) -> Tensor:
        """[d_model] direction in the raw activation space along which the score rises."""
        raise NotImplementedError

    def config(self) -> dict[str, int | str]:
        """Constructor arguments, saved with the probe so it can be rebuilt."""
        return {"kind": self.kind, "d_model": self.d_model}


class LinearProbe(Probe):
    """score = w · (x - mean) / std + b."""

    kind = "linear"

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.weight = nn.Parameter(torch.zeros(d_model))   # [d_model], on standardized input
        self.bias = nn.Parameter(torch.zeros(()))

    def score_standardized(self, z: Tensor) -> Tensor:
        return z @ self.weight + self.bias

    def direction(self, x: Tensor | None = None) -> Tensor:
        """weight / std: the raw-space gradient of the score (x is ignored: it is the same everywhere)."""
        return (self.weight / self.std).detach()


class MLPProbe(Probe):
    """score = w2 · GELU(W1 z + b1) + b2 on standardized z."""

    kind = "mlp"

    def __init__(self, d_model: int, hidden: int = 256) -> None:
        super().__init__(d_model)
        if hidden < 1:
            raise RsearchError(f"hidden must be positive, got {hidden}")
        self.hidden = int(hidden)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def score_standardized(self, z: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(z))).squeeze(-1)

    def direction(self, x: Tensor | None = None) -> Tensor:
        """Average raw-space input gradient over x [n, d_model]; at the training mean when x is None."""
        x = self.mean[None] if x is None else x
        with torch.enable_grad():
            xs = x.detach().to(self.mean.dtype).requires_grad_(True)
            self(xs).sum().backward(inputs=[xs])
        return xs.grad.mean(0)

    def config(self) -> dict[str, int | str]:
        return {**super().config(), "hidden": self.hidden}


def make_probe(kind: str, d_model: int, **kw: int) -> Probe:
    """Builds an untrained probe.

    Args:
        kind: "linear" or "mlp".
        d_model: width of the activations.
        **kw: `hidden` for the MLP; ignored by the linear probe.
    """
    if kind == "linear":
        return LinearProbe(d_model)
    if kind == "mlp":
        return MLPProbe(d_model, hidden=int(kw.get("hidden", 256)))
    raise RsearchError(f"unknown probe kind {kind!r} (known: {', '.join(KINDS)})")
