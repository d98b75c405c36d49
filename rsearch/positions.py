"""Position specs → per-row weights over a padded batch: where in each conversation a probe reads.

Specs:
  -1, -2, …           counted from the row's last real token (-1 is the seed's default)
  0, 1, …             absolute index into the unpadded row
  user_end            the last token before any completion token (end of the generation prompt)
  completion_start    the first completion token
  completion_end      the last completion token
  completion_frac:F   the completion token at fraction F ∈ [0, 1] of the way through it
  completion_mean     the mean over all completion tokens

Every spec becomes a weight vector over the padded sequence (one-hot, or uniform for the mean), so that
gathering activations at any spec is one weighted sum: `[batch, seq] × [batch, seq, d] → [batch, d]`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from rsearch.chat import Encoded
from rsearch.errors import RsearchError

_NAMED = ("user_end", "completion_start", "completion_end", "completion_mean")
_FRAC = re.compile(r"^completion_frac:([0-9]*\.?[0-9]+)$")


@dataclass(frozen=True)
class Position:
    spec: str

    @property
    def needs_completion(self) -> bool:
        return self.spec.startswith("completion")

    def __str__(self) -> str:
        return self.spec


def parse_position(spec: str | int | Position) -> Position:
    if isinstance(spec, Position):
        return spec
    text = str(spec).strip()
    if text in _NAMED or re.fullmatch(r"-?\d+", text):
        return Position(text)
    m = _FRAC.match(text)
    if m and 0.0 <= float(m.group(1)) <= 1.0:
        return Position(f"completion_frac:{float(m.group(1)):g}")
    raise RsearchError(f"unknown position {text!r}: use an integer, {', '.join(_NAMED)} or completion_frac:F "
                       "with 0 ≤ F ≤ 1")


def token_indices(position: Position, row: Encoded, row_number: int = 0) -> list[int]:
    """Indices (into the unpadded row) the position reads; one index, or the whole completion for the mean."""
    n = len(row)
    spec = position.spec
    c0, c1 = row.completion
    if position.needs_completion and c1 <= c0:
        raise RsearchError(f"position {spec} needs a completion, but row {row_number} has none")
    if spec == "user_end":
        return [row.user_end]
    if spec == "completion_start":
        return [c0]
    if spec == "completion_end":
        return [c1 - 1]
    if spec == "completion_mean":
        return list(range(c0, c1))
    if spec.startswith("completion_frac:"):
        frac = float(spec.split(":", 1)[1])
        return [c0 + int(round(frac * (c1 - c0 - 1)))]
    index = int(spec)
    resolved = index if index >= 0 else n + index
    if not 0 <= resolved < n:
        raise RsearchError(f"position {spec} is out of range for row {row_number} of {n} tokens")
    return [resolved]


def position_weights(
    positions: Sequence[Position], rows: Sequence[Encoded], seq_len: int, left_pad: Sequence[int]
) -> torch.Tensor:
    """Weights of each position over each padded row.

    Args:
        positions: parsed specs.
        rows: the batch's unpadded rows.
        seq_len: padded length.
        left_pad: number of pad tokens before each row (0 everywhere for right padding).

    Returns:
        `[n_positions, batch, seq_len]` float32, each row summing to 1.
    """
    w = torch.zeros(len(positions), len(rows), seq_len)
    for b, (row, pad) in enumerate(zip(rows, left_pad)):
        for p, position in enumerate(positions):
            idx = token_indices(position, row, b)
            w[p, b, [pad + i for i in idx]] = 1.0 / len(idx)
    return w


def gather(weights: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """`[n_pos, batch, seq]` weights × `[batch, seq, d]` hidden → `[n_pos, batch, d]` in float32."""
    return torch.einsum("pbs,bsd->pbd", weights.to(hidden.device), hidden.float())
