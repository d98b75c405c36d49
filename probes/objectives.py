"""Training objectives: pairwise (Bradley–Terry), regression (squared error), classification (BCE).

Each objective trains on "units": pairs for pairwise, rows for the other two. The fast fitters minimise
the same losses with an L2 penalty: mean loss + (l2 / 2) · ||w||² on standardized features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rsearch.probes.data import ProbeData
from rsearch.probes.models import Probe
from rsearch.errors import RsearchError

OBJECTIVES = ("pairwise", "regression", "classification")

# the validation metric each objective early-stops and selects on (higher is better)
PRIMARY_METRIC = {"pairwise": "pairwise_acc", "regression": "pearson", "classification": "auroc"}


def check_objective(objective: str, data: ProbeData | None = None, *, where: str = "train") -> None:
    """Raises RsearchError unless `objective` is known and `data` carries what it needs."""
    if objective not in OBJECTIVES:
        raise RsearchError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    if data is None:
        return
    if objective == "pairwise" and data.n_pairs == 0:
        raise RsearchError(f"the pairwise objective needs pairs, and the {where} data has none")
    if objective == "classification":
        values = torch.unique(data.y)
        if not bool(((values == 0) | (values == 1)).all()):
            raise RsearchError(f"the classification objective needs 0/1 labels; the {where} data has "
                               f"{values[:5].tolist()}")


def pairwise_loss(s_chosen: Tensor, s_rejected: Tensor) -> Tensor:
    """Bradley–Terry: mean of -log σ(s_chosen - s_rejected). Args: both [m]."""
    return -F.logsigmoid(s_chosen - s_rejected).mean()


def regression_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Half the mean squared error. Args: scores [n], y [n]."""
    return 0.5 * (scores - y).pow(2).mean()


def classification_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy on logits, softplus(s) − y·s. Args: scores [n], y [n] in {0, 1}.

    Written out because torch's fused binary_cross_entropy_with_logits takes ~12 ms on 8 elements
    with 2 CPU threads (torch 2.13), which would dominate the SGD recipe.
    """
    return (F.softplus(scores) - y * scores).mean()


def num_units(data: ProbeData, objective: str) -> int:
    """How many training units (pairs or rows) the objective sees in `data`."""
    return data.n_pairs if objective == "pairwise" else data.n


def batch_loss(probe: Probe, data: ProbeData, units: Tensor, objective: str) -> Tensor:
    """The objective's loss on a batch of units.

    Args:
        probe: the probe being trained.
        data: training data.
        units: [b] indices of pairs (pairwise) or rows (regression, classification).
        objective: one of OBJECTIVES.
    """
    if objective == "pairwise":
        rows = data.pairs[units]                                  # [b, 2]
        scores = probe(data.x[rows.flatten()]).view(-1, 2)        # [b, 2]
        return pairwise_loss(scores[:, 0], scores[:, 1])
    scores = probe(data.x[units])                                 # [b]
    y = data.y[units].to(scores.dtype)
    if objective == "regression":
        return regression_loss(scores, y)
    return classification_loss(scores, y)
