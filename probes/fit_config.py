"""FitConfig: how to fit a probe (its own module, so fitters.py and the fitters it dispatches to do not import
each other)."""
from __future__ import annotations

from dataclasses import dataclass

from rsearch.config import Config, check
from rsearch.probes.objectives import OBJECTIVES

FITTERS = ("fast", "sgd")
FAST_METHODS = ("auto", "newton", "lbfgs")


@dataclass(frozen=True)
class FitConfig(Config):
    """How to fit a probe.

    Args:
        objective: "pairwise" | "regression" | "classification".
        fitter: "fast" | "sgd".
        lr, batch_size, weight_decay, max_epochs, patience: the SGD recipe (batch_size counts pairs for
            the pairwise objective, rows otherwise; patience counts epochs without improvement).
        l2: penalty of the fast fitters, mean loss + (l2 / 2) · ||w||² on standardized features, used
            when there is no validation data or l2_grid is empty.
        l2_grid: with validation data, the fast fitter picks the linear probe's l2 from this grid by the
            validation metric (largest first, warm-started, so the grid costs a few fits' worth, not
            len(grid)). The MLP uses l2 alone: its validation checkpoints already regularize it.
        fast_method: how the fast fitter solves the logistic objectives of the linear probe: "newton"
            (exact Hessian, d×d per step), "lbfgs", or "auto" (Newton up to NEWTON_MAX_D, else L-BFGS).
            Ridge is always closed form; the MLP always uses L-BFGS.
        max_iter: Newton / L-BFGS iteration cap of the fast fitters.
        tol: Newton stops when half the Newton decrement falls below tol; L-BFGS when the loss changes
            by less than tol (or the largest gradient entry falls below 1e-7).
        hidden: hidden width of the MLP probe.
        seed: seeds initialization and batch order.
    """

    objective: str = "pairwise"
    fitter: str = "fast"
    lr: float = 1e-4
    batch_size: int = 8
    weight_decay: float = 1e-4
    max_epochs: int = 20
    patience: int = 2
    l2: float = 1e-3
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    fast_method: str = "auto"
    max_iter: int = 100
    tol: float = 1e-10
    hidden: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.objective in OBJECTIVES,
              f"objective: unknown {self.objective!r} (known: {', '.join(OBJECTIVES)})")
        check(self.fitter in FITTERS, f"fitter: unknown {self.fitter!r} (known: {', '.join(FITTERS)})")
        check(self.lr > 0, f"lr: must be positive, got {self.lr}")
        check(self.batch_size >= 1, f"batch_size: must be at least 1, got {self.batch_size}")
        check(self.weight_decay >= 0, f"weight_decay: must be non-negative, got {self.weight_decay}")
        check(self.max_epochs >= 1, f"max_epochs: must be at least 1, got {self.max_epochs}")
        check(self.patience >= 1, f"patience: must be at least 1, got {self.patience}")
        check(self.l2 >= 0, f"l2: must be non-negative, got {self.l2}")
        check(all(v >= 0 for v in self.l2_grid), f"l2_grid: values must be non-negative, got {self.l2_grid}")
        check(self.fast_method in FAST_METHODS,
              f"fast_method: unknown {self.fast_method!r} (known: {', '.join(FAST_METHODS)})")
        check(self.max_iter >= 1, f"max_iter: must be at least 1, got {self.max_iter}")
        check(self.tol > 0, f"tol: must be positive, got {self.tol}")
        check(self.hidden >= 1, f"hidden: must be at least 1, got {self.hidden}")
