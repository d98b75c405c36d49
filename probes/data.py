"""ProbeData: activations with their ratings, preference pairs and completion lengths."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rsearch.errors import RsearchError

CHUNK_ROWS = 8192


@dataclass(frozen=True)
class ProbeData:
    """One row per completion; pairs index rows as (chosen, rejected).

    Args:
        x: [n, d_model] activations (float32, bfloat16 or float16; upcast to float32 chunk by chunk).
        y: [n] float rating (regression) or 0/1 label (classification).
        pairs: [m, 2] long row indices (chosen, rejected), for the pairwise objective and metric.
        lengths: [n] completion length in tokens, for the length control.
    """

    x: Tensor
    y: Tensor
    pairs: Tensor | None = None
    lengths: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.dim() != 2:
            raise RsearchError(f"ProbeData.x must be a [n, d_model] tensor, got {_shape(self.x)}")
        if not self.x.is_floating_point():
            raise RsearchError(f"ProbeData.x must be floating point, got {self.x.dtype}")
        n = self.x.shape[0]
        if not isinstance(self.y, Tensor) or tuple(self.y.shape) != (n,):
            raise RsearchError(f"ProbeData.y must have shape [{n}], got {_shape(self.y)}")
        if self.pairs is not None:
            p = self.pairs
            if not isinstance(p, Tensor) or p.dim() != 2 or p.shape[1] != 2 or p.is_floating_point():
                raise RsearchError(f"ProbeData.pairs must be a [m, 2] integer tensor, got {_shape(p)}")
            if p.numel() and (int(p.min()) < 0 or int(p.max()) >= n):
                raise RsearchError(f"ProbeData.pairs index rows outside [0, {n})")
        if self.lengths is not None and (not isinstance(self.lengths, Tensor)
                                         or tuple(self.lengths.shape) != (n,)):
            raise RsearchError(f"ProbeData.lengths must have shape [{n}], got {_shape(self.lengths)}")

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d_model(self) -> int:
        return self.x.shape[1]

    @property
    def n_pairs(self) -> int:
        return 0 if self.pairs is None else self.pairs.shape[0]

    def subset(self, rows: Tensor | list[int]) -> ProbeData:
        """The given rows, re-indexed; a pair is kept only where both its rows are inside.

        Args:
            rows: [k] row indices (or a [n] bool mask) into this data.
        """
        rows = torch.as_tensor(rows, device=self.x.device)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        rows = rows.long()
        pairs = None
        if self.pairs is not None:
            new_index = torch.full((self.n,), -1, dtype=torch.long, device=self.x.device)
            new_index[rows] = torch.arange(rows.numel(), device=self.x.device)
            mapped = new_index[self.pairs.long()]                     # [m, 2]
            pairs = mapped[(mapped >= 0).all(dim=1)]
        return ProbeData(
            x=self.x[rows], y=self.y[rows], pairs=pairs,
            lengths=None if self.lengths is None else self.lengths[rows],
        )

    def to(self, device: torch.device | str) -> ProbeData:
        """All tensors on `device` (x keeps its dtype)."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)
        return ProbeData(x=self.x.to(device), y=self.y.to(device), pairs=move(self.pairs),
                         lengths=move(self.lengths))

    def with_labels(self, y: Tensor, pairs: Tensor | None) -> ProbeData:
        """Same activations and lengths with new labels and pairs (the shuffled control uses this)."""
        return ProbeData(x=self.x, y=y, pairs=pairs, lengths=self.lengths)


def column_stats(x: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-column mean and std (n − 1) of x: float32 sums per row chunk, accumulated in float64.

    Args:
        x: [n, d] activations of any float dtype.
        eps: floor on the std, so constant columns standardize to 0 instead of inf.

    Returns:
        mean [d] and std [d], float32.
    """
    n = x.shape[0]
    if n == 0:
        raise RsearchError("cannot fit a probe on zero rows")
    shift = x[:CHUNK_ROWS].float().mean(0)                    # [d]; centring keeps one-pass float32 sums exact
    s1 = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s1)
    for start in range(0, n, CHUNK_ROWS):
        c = x[start:start + CHUNK_ROWS].float() - shift
        s1 += c.sum(0).double()
        s2 += (c * c).sum(0).double()
    centred_mean = s1 / n
    var = (s2 - n * centred_mean.pow(2)).clamp_min(0) / max(n - 1, 1)
    mean32 = (centred_mean + shift.double()).float()
    std = var.sqrt().clamp_min(eps)
    return mean32, std.float()


def _shape(t: object) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__
