"""Fast fitters: closed-form ridge, Newton/IRLS for the logistic objectives, full-batch L-BFGS.

All minimise mean loss + (l2 / 2) · ||w||² on standardized features, full batch, over row chunks
(float32 matmuls, float64 accumulation). The standardized design is kept in memory up to
MATERIALIZE_BYTES and rebuilt from the activations on every pass beyond that.
Pairwise uses difference features z_chosen − z_rejected, where the mean and the bias cancel.
Classification appends an unpenalized intercept column. The MLP probe has no closed form or cheap
Hessian: it is fitted by L-BFGS, checking the validation metric every LBFGS_EVAL_EVERY iterations and
keeping the best (its loss is not convex, so this replaces early stopping).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from rsearch.probes.data import CHUNK_ROWS, ProbeData
from rsearch.probes.fit_config import FitConfig
from rsearch.probes.fit_sgd import init_probe
from rsearch.probes.metrics import evaluate
from rsearch.probes.models import LinearProbe, Probe
from rsearch.probes.objectives import PRIMARY_METRIC, batch_loss, num_units
from rsearch.errors import RsearchError

NEWTON_MAX_D = 256        # bench_fitters.py: L-BFGS wins from d 512 on CPU and at d 4096 on an H100
LBFGS_EVAL_EVERY = 10
MATERIALIZE_BYTES = 2 << 30

Solver = Callable[[float, Tensor], tuple[Tensor, int]]


def fit_fast(kind: str, train: ProbeData, val: ProbeData | None, cfg: FitConfig) -> tuple[Probe, dict]:
    """Fits a probe by the fastest exact method for its kind and objective.

    Args:
        kind: "linear" or "mlp".
        train: training data.
        val: validation data; picks the linear probe's l2 from cfg.l2_grid, the MLP's best L-BFGS checkpoint.
        cfg: objective, l2, l2_grid, fast_method, max_iter, tol, hidden, seed.

    Returns:
        (probe, history) with `method`, `l2`, `grid` (l2 -> validation metric), `epochs` (iterations),
        `val_metric`, `seconds`.
    """
    start = time.perf_counter()
    probe = init_probe(kind, train, cfg)
    if kind == "mlp":
        history = _fit_mlp_lbfgs(probe, train, val, cfg, [cfg.l2])
    else:
        history = _fit_linear(probe, train, val, cfg, _lambdas(cfg, val))
    history["seconds"] = time.perf_counter() - start
    return probe, history


def design_chunks(data: ProbeData, objective: str, mean: Tensor, std: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields (features [c, p] float32, targets [c] float32) over the data.

    p is d_model, plus one intercept column for classification. Pairwise rows are z_chosen − z_rejected
    with target 1 (the Bradley–Terry loss is the logistic loss of the difference).
    """
    if objective == "pairwise":
        pairs = data.pairs.long()
        for i in range(0, pairs.shape[0], CHUNK_ROWS):
            p = pairs[i:i + CHUNK_ROWS]
            feats = data.x[p[:, 0]].float().sub_(data.x[p[:, 1]]).div_(std)        # [c, d]; the gather copies
            yield feats, torch.ones(feats.shape[0], device=feats.device)
        return
    for i in range(0, data.n, CHUNK_ROWS):
        feats = (data.x[i:i + CHUNK_ROWS].float() - mean).div_(std)              # [c, d]
        if objective == "classification":
            feats = torch.cat([feats, torch.ones_like(feats[:, :1])], dim=1)       # [c, d + 1]
        yield feats, data.y[i:i + CHUNK_ROWS].float()


class Design:
    """The standardized design of an objective: held in memory when it fits MATERIALIZE_BYTES, else
    rebuilt from the activations chunk by chunk on every pass."""

    def __init__(self, data: ProbeData, objective: str, mean: Tensor, std: Tensor) -> None:
        self.n = num_units(data, objective)
        self.dim = data.d_model + (objective == "classification")
        self._args = (data, objective, mean, std)
        fits = self.n * self.dim * 4 <= MATERIALIZE_BYTES
        self._cached = list(design_chunks(*self._args)) if fits else None

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self._cached) if self._cached is not None else design_chunks(*self._args)

    def logistic(self, w: Tensor, l2: float, penalized: Tensor, hessian: bool = False
                 ) -> tuple[float, Tensor, Tensor | None]:
        """Penalized mean logistic loss at w [p] (float64), its gradient [p] and optionally Hessian [p, p]."""
        grad = torch.zeros_like(w)
        hess = torch.zeros(self.dim, self.dim, dtype=w.dtype, device=w.device) if hessian else None
        loss, w32 = 0.0, w.float()
        for feats, y in self.chunks():
            m = feats @ w32                                                             # [c]
            p = torch.sigmoid(m)
            grad += (feats.T @ (p - y)).double()
            if hess is not None:
                hess += ((feats * (p * (1 - p))[:, None]).T @ feats).double()
            loss += float((F.softplus(m) - y * m).double().sum())
        grad = grad / self.n + l2 * penalized * w
        if hess is not None:
            hess = hess / self.n + torch.diag(l2 * penalized + 1e-10)
        return loss / self.n + 0.5 * l2 * float((penalized * w * w).sum()), grad, hess


def ridge_solver(data: ProbeData, mean: Tensor, std: Tensor) -> tuple[Solver, float]:
    """Normal equations of ridge on standardized features; returns (l2 -> weights, intercept).

    Standardized columns are centred, so the intercept is mean(y) and only w needs solving:
    w = (ZᵀZ / n + l2 I)⁻¹ Zᵀ(y − ȳ) / n, by Cholesky (eigendecomposition if singular).
    """
    d, n = data.d_model, data.n
    y_bar = float(data.y.double().mean())
    gram = torch.zeros(d, d, dtype=torch.float64, device=data.x.device)            # [d, d]
    rhs = torch.zeros(d, dtype=torch.float64, device=data.x.device)                # [d]
    for feats, y in design_chunks(data, "regression", mean, std):               # one pass: no caching
        gram += (feats.T @ feats).double()
        rhs += (feats.T @ (y - y_bar)).double()
    gram, rhs = gram / n, rhs / n
    eig: list[tuple[Tensor, Tensor]] = []

    def solve(l2: float, _w0: Tensor) -> tuple[Tensor, int]:
        if not eig:
            chol, info = torch.linalg.cholesky_ex(gram + l2 * torch.eye(d, dtype=gram.dtype, device=gram.device))
            if int(info) == 0:
                return torch.cholesky_solve(rhs[:, None], chol)[:, 0], 1
            eig.append(torch.linalg.eigh(gram))
        values, vectors = eig[0]
        denom = values.clamp_min(0) + l2
        inv = torch.where(denom > 1e-12 * values.abs().max(), 1 / denom, torch.zeros_like(denom))
        return vectors @ (inv * (vectors.T @ rhs)), 1

    return solve, y_bar


def newton_solver(design: Design, penalized: Tensor, cfg: FitConfig) -> Solver:
    """Newton/IRLS on the penalized logistic loss; (l2, w0) -> (w, steps).

    Each step: gradient and Hessian in one pass, Cholesky solve, backtracking on the objective.
    Stops when half the Newton decrement gᵀH⁻¹g falls below cfg.tol.
    """

    def solve(l2: float, w0: Tensor) -> tuple[Tensor, int]:
        w = w0.clone()
        for step in range(cfg.max_iter):
            # the Newton direction; stop once the decrement says we are there
            loss, grad, hess = design.logistic(w, l2, penalized, hessian=True)
            chol, info = torch.linalg.cholesky_ex(hess)
            direction = (torch.cholesky_solve(grad[:, None], chol)[:, 0] if int(info) == 0
                         else torch.linalg.lstsq(hess, grad[:, None]).solution[:, 0])
            decrement = float(grad @ direction)
            if decrement / 2 < cfg.tol:
                return w, step
            # backtrack until the objective falls by a quarter of the predicted amount
            t = 1.0
            while t > 1e-6 and design.logistic(w - t * direction, l2, penalized)[0] > loss - 0.25 * t * decrement:
                t /= 2
            w = w - t * direction
        return w, cfg.max_iter

    return solve


def lbfgs_solver(design: Design, penalized: Tensor, cfg: FitConfig) -> Solver:
    """L-BFGS (strong Wolfe) in float64 on the penalized logistic loss; (l2, w0) -> (w, iterations).

    Each iteration costs two matrix-vector passes over the design, against Newton's d×d Hessian.
    """

    def solve(l2: float, w0: Tensor) -> tuple[Tensor, int]:
        w = w0.clone()
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=cfg.max_iter, max_eval=cfg.max_iter * 5, history_size=20,
                                tolerance_grad=1e-7, tolerance_change=cfg.tol, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            loss, w.grad, _ = design.logistic(w, l2, penalized)
            return torch.tensor(loss, dtype=torch.float64)

        opt.step(closure)
        return w, int(opt.state[w].get("n_iter", 0))

    return solve


def _fit_linear(probe: LinearProbe, train: ProbeData, val: ProbeData | None, cfg: FitConfig,
                lambdas: list[float]) -> dict:
    """Ridge (regression), or Newton or L-BFGS (pairwise, classification), over the l2 grid, warm-started."""
    d, objective = train.d_model, cfg.objective
    bias = 0.0
    if objective == "regression":
        solve, bias = ridge_solver(train, probe.mean, probe.std)
        method = "ridge"
    else:
        design = Design(train, objective, probe.mean, probe.std)
        penalized = torch.ones(design.dim, dtype=torch.float64, device=train.x.device)
        if objective == "classification":
            penalized[-1] = 0.0
        method = _method(cfg, d)
        solve = (newton_solver if method == "newton" else lbfgs_solver)(design, penalized, cfg)
    w = torch.zeros(d + (objective == "classification"), dtype=torch.float64, device=train.x.device)
    metric = PRIMARY_METRIC[objective]
    grid: dict[str, float] = {}
    best: tuple[float, Tensor, float] | None = None
    steps = 0
    for l2 in lambdas:
        w, k = solve(l2, w)
        steps += k
        _set_linear(probe, w, d, bias)
        score = evaluate(probe, val, objective).get(metric, float("-inf")) if val is not None else 0.0
        grid[repr(l2)] = score
        if best is None or score > best[0]:
            best = (score, w.clone(), l2)
    _set_linear(probe, best[1], d, bias)
    return {"fitter": "fast", "method": method, "metric": metric, "l2": best[2], "grid": grid,
            "epochs": steps, "val_metric": [best[0]] if val is not None else []}


def _fit_mlp_lbfgs(probe: Probe, train: ProbeData, val: ProbeData | None, cfg: FitConfig,
                   lambdas: list[float]) -> dict:
    """Full-batch L-BFGS (strong Wolfe) on the objective through the MLP, chunked, weights (not biases)
    penalized; the best validation checkpoint wins."""
    n = num_units(train, cfg.objective)
    metric = PRIMARY_METRIC[cfg.objective]
    penalized = [p for name, p in probe.named_parameters() if not name.endswith("bias")]
    units = torch.arange(n, device=train.x.device)
    grid: dict[str, float] = {}
    best: tuple[float, dict, float] | None = None
    iterations = 0
    for l2 in lambdas:
        opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=LBFGS_EVAL_EVERY, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            # full-batch loss, its gradient accumulated chunk by chunk
            opt.zero_grad(set_to_none=False)
            total = 0.0
            for i in range(0, n, CHUNK_ROWS):
                chunk = units[i:i + CHUNK_ROWS]
                loss = batch_loss(probe, train, chunk, cfg.objective) * (chunk.numel() / n)
                loss.backward()
                total += float(loss.detach())
            penalty = 0.5 * l2 * sum(p.pow(2).sum() for p in penalized)
            penalty.backward()
            return torch.tensor(total + float(penalty.detach()))

        first = next(probe.parameters())
        lam_best = float("-inf")
        while True:
            # a few L-BFGS iterations, then a validation checkpoint
            probe.train()
            before = opt.state[first].get("n_iter", 0)
            asked = min(LBFGS_EVAL_EVERY, cfg.max_iter - before)
            opt.param_groups[0].update(max_iter=asked, max_eval=asked * 5)
            opt.step(closure)
            ran = opt.state[first].get("n_iter", 0) - before
            iterations += ran
            probe.eval()
            score = evaluate(probe, val, cfg.objective).get(metric, float("-inf")) if val is not None else 0.0
            lam_best = max(lam_best, score)
            if best is None or score > best[0] or val is None:
                best = (score, copy.deepcopy(probe.state_dict()), l2)
            if ran < asked or before + ran >= cfg.max_iter:
                break
        grid[repr(l2)] = lam_best
    if best is None:
        raise RsearchError("L-BFGS made no progress")
    probe.load_state_dict(best[1])
    return {"fitter": "fast", "method": "lbfgs", "metric": metric, "l2": best[2], "grid": grid,
            "epochs": iterations, "val_metric": [best[0]] if val is not None else []}


def _set_linear(probe: LinearProbe, w: Tensor, d: int, bias: float) -> None:
    with torch.no_grad():
        probe.weight.copy_(w[:d].float())
        probe.bias.fill_(float(w[d]) if w.numel() > d else bias)


def _lambdas(cfg: FitConfig, val: ProbeData | None) -> list[float]:
    if cfg.l2_grid and val is not None:
        return sorted(set(cfg.l2_grid), reverse=True)
    return [cfg.l2]


def _method(cfg: FitConfig, d: int) -> str:
    if cfg.fast_method == "auto":
        return "newton" if d <= NEWTON_MAX_D else "lbfgs"
    return cfg.fast_method
