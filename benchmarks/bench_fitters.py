"""Probe fitters, time to accuracy: rsearch's fast fitter vs the seed's SGD recipe vs scikit-learn.

Synthetic residual-stream-like features (nonzero mean, a few outlier dimensions, low-rank structure,
a prompt component shared by both completions of a pair), with a planted reward direction and logistic
label noise, so held-out pairwise accuracy tops out well below 1. Every method fits the pairwise
(Bradley–Terry) objective of a linear probe:

  fast      rsearch fitter="fast" (Newton/IRLS up to NEWTON_MAX_D, else L-BFGS); standardization timed
  newton /  the two fast methods forced, for the record
  lbfgs
  sgd       rsearch fitter="sgd": the seed's recipe (AdamW lr 1e-4, batch 8, wd 1e-4, patience 2)
  sklearn   LogisticRegression(fit_intercept=False, lbfgs) on the same standardized difference features
            (random sign flips give it two classes without changing the objective), C = 1 / (l2 · m)
            so it minimises the same penalized loss; building its features is timed, like ours

The penalty l2 is chosen once per d on the validation split by the fast fitter over L2_GRID (untimed),
then shared by fast, newton, lbfgs and sklearn, so all four minimise the same objective.
Time to accuracy is the time to reach within --within points of the best held-out (validation)
pairwise accuracy any method ends at (its last fit; SGD: its restored best epoch). For fast, newton,
lbfgs and sklearn it is the time (best of --repeats) of the cheapest iteration cap (1, 2, 3, 5, 8, …
a fresh fit each) that reaches the target; for SGD the cumulative training time (evaluation
excluded) of the first epoch that does. A method that never reaches the
target shows ">" and its ratio is a lower bound. SGD's time leaves out its set-up (standardization
statistics, well under one epoch). Timings on a shared machine vary: rerun before quoting small ratios.

    python benchmarks/bench_fitters.py                          # d 512 and 2048, 8000 train pairs
    python benchmarks/bench_fitters.py --dims 512 --pairs 4000 --threads 1
    python benchmarks/bench_fitters.py --device cuda --dtype bfloat16 --dims 4096 --pairs 60000 \
        --skip-sklearn --sgd-epochs 3                           # the real study's shape
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rsearch.probes import FitConfig, ProbeData, evaluate, fit_probe  # noqa: E402
from rsearch.probes.data import column_stats  # noqa: E402
from rsearch.probes.fit_fast import NEWTON_MAX_D  # noqa: E402

L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
ITER_LADDER = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 1000)


def synthetic(m: int, d: int, seed: int, rank: int = 64, label_noise: float = 1.0) -> ProbeData:
    """m pairs (2m rows) of [2m, d] activations with a planted reward direction."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g) / math.sqrt(rank)                  # [rank, d]
    mean = torch.randn(d, generator=g) * 2
    scale = torch.ones(d)
    scale[torch.randperm(d, generator=g)[: max(1, d // 100)]] = 20.0            # outlier dimensions
    prompt = torch.randn(m, rank, generator=g).repeat_interleave(2, 0) * 2       # [2m, rank] shared per pair
    own = torch.randn(2 * m, rank, generator=g)                                  # [2m, rank] per completion
    x = mean + ((prompt + own) @ basis + 0.5 * torch.randn(2 * m, d, generator=g)) * scale
    w = torch.randn(rank, generator=g)
    reward = own @ (w / w.norm()) * 2                                            # [2m]
    logistic = torch.logit(torch.rand(m, generator=g).clamp(1e-6, 1 - 1e-6))
    first_wins = (reward[0::2] - reward[1::2]) * 2 + label_noise * logistic > 0
    pairs = torch.arange(2 * m).view(m, 2)
    pairs = torch.where(first_wins[:, None], pairs, pairs.flip(1))
    return ProbeData(x=x, y=reward, pairs=pairs)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ladder(fit_at) -> list[tuple[float, float]]:
    """(seconds, val acc) for growing iteration caps until the fit stops using its whole cap."""
    points = []
    for cap in ITER_LADDER:
        seconds, acc, used = fit_at(cap)
        points.append((seconds, acc))
        if used < cap:
            break
    return points


def run_fast(train, val, test, method: str, l2: float, repeats: int) -> dict:
    def fit_at(cap):
        seconds = float("inf")
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            probe, hist = fit_probe("linear", train, None, FitConfig(fast_method=method, l2=l2, max_iter=cap))
            sync()
            seconds = min(seconds, time.perf_counter() - t0)
        fit_at.probe = probe
        return seconds, evaluate(probe, val, "pairwise")["pairwise_acc"], hist["epochs"]

    points = ladder(fit_at)
    return {"points": points, "final_val_acc": points[-1][1],
            "test_acc": evaluate(fit_at.probe, test, "pairwise")["pairwise_acc"]}


def run_sgd(train, val, test, max_epochs: int) -> dict:
    probe, hist = fit_probe("linear", train, val, FitConfig(fitter="sgd", max_epochs=max_epochs))
    points = list(zip(hist["epoch_seconds"], hist["val_metric"]))
    return {"points": points, "final_val_acc": evaluate(probe, val, "pairwise")["pairwise_acc"],
            "test_acc": evaluate(probe, test, "pairwise")["pairwise_acc"], "epochs": hist["epochs"]}


def run_sklearn(train, val, test, l2: float, repeats: int) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    import warnings

    def diffs(data, std):
        return ((data.x[data.pairs[:, 0]].float() - data.x[data.pairs[:, 1]].float()) / std).double().cpu().numpy()

    # its features: standardized differences in float64 with random sign flips (timed, added to every fit)
    t0 = time.perf_counter()
    _, std = column_stats(train.x)
    feats = diffs(train, std)
    flip = np.random.default_rng(0).random(len(feats)) < 0.5
    feats[flip] *= -1
    labels = (~flip).astype(int)
    prep = time.perf_counter() - t0
    val_f, test_f = diffs(val, std), diffs(test, std)

    def fit_at(cap):
        seconds = float("inf")
        for _ in range(repeats):
            clf = LogisticRegression(C=1 / (l2 * len(feats)), fit_intercept=False, max_iter=cap, tol=1e-6)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                clf.fit(feats, labels)
                seconds = min(seconds, time.perf_counter() - t0 + prep)
        fit_at.clf = clf
        return seconds, float((val_f @ clf.coef_[0] > 0).mean()), int(clf.n_iter_[0])

    points = ladder(fit_at)
    test_acc = float((test_f @ fit_at.clf.coef_[0] > 0).mean())
    return {"points": points, "final_val_acc": points[-1][1], "test_acc": test_acc}


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    for seconds, acc in points:
        if acc >= target:
            return seconds
    return None


def warm_up(device: str) -> None:
    """First use of torch.optim and of some kernels costs seconds of lazy imports: pay it untimed."""
    tiny = synthetic(64, 8, seed=1)
    tiny = ProbeData(tiny.x.to(device), tiny.y, tiny.pairs).to(device)
    for cfg in (FitConfig(fast_method="newton"), FitConfig(fast_method="lbfgs"), FitConfig(fitter="sgd", max_epochs=1)):
        fit_probe("linear", tiny, tiny, cfg)


def bench(d: int, args) -> dict:
    pool = synthetic(args.pairs + 2 * args.val_pairs, d, seed=args.seed)
    pool = ProbeData(pool.x.to(args.device, getattr(torch, args.dtype)), pool.y, pool.pairs).to(args.device)
    m = args.pairs
    train = pool.subset(torch.arange(0, 2 * m))
    val = pool.subset(torch.arange(2 * m, 2 * (m + args.val_pairs)))
    test = pool.subset(torch.arange(2 * (m + args.val_pairs), 2 * (m + 2 * args.val_pairs)))

    l2 = args.l2
    if l2 is None:
        l2 = fit_probe("linear", train, val, FitConfig(l2_grid=L2_GRID))[1]["l2"]
    results = {name: run_fast(train, val, test, method, l2, args.repeats)
               for name, method in (("fast", "auto"), ("newton", "newton"), ("lbfgs", "lbfgs"))}
    if not args.skip_sklearn:
        results["sklearn"] = run_sklearn(train, val, test, l2, args.repeats)
    if not args.skip_sgd:
        results["sgd"] = run_sgd(train, val, test, args.sgd_epochs)
    best = max(r["final_val_acc"] for r in results.values())
    target = best - args.within / 100
    for r in results.values():
        r["time_to_target"] = time_to(r["points"], target)
        r["total_seconds"] = r["points"][-1][0]
    return {"d": d, "l2": l2, "best": best, "target": target, "results": results}


def ratio(num: dict, den: dict) -> tuple[float, bool]:
    """(num time / den time, is_lower_bound) where an unreached target uses the total time."""
    t_num = num["time_to_target"]
    t_den = den["time_to_target"] or den["total_seconds"]
    if t_num is None:
        return num["total_seconds"] / t_den, True
    return t_num / t_den, False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 2048], help="d_model values")
    ap.add_argument("--pairs", type=int, default=8000, help="training pairs")
    ap.add_argument("--val-pairs", type=int, default=2000, help="validation and test pairs, each")
    ap.add_argument("--l2", type=float, default=None,
                    help="penalty shared by fast and sklearn (default: chosen on validation from L2_GRID)")
    ap.add_argument("--within", type=float, default=0.5, help="target: best val accuracy minus this many points")
    ap.add_argument("--sgd-epochs", type=int, default=20, help="max epochs of the SGD recipe")
    ap.add_argument("--skip-sgd", action="store_true")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--device", default="cpu", help="where the activations live and the torch fitters run")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="activation dtype (the fitters upcast to float32)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3, help="each capped fit's time is the best of this many")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    warm_up(args.device)
    summary = {}
    print(f"pairwise linear probe, {args.pairs} train / {args.val_pairs} val / {args.val_pairs} test pairs, "
          f"{args.device} {args.dtype}, torch threads {args.threads}, NEWTON_MAX_D {NEWTON_MAX_D}, "
          f"target = best val acc - {args.within} pt")
    for d in args.dims:
        out = bench(d, args)
        print(f"\nd_model {d}: l2 {out['l2']:g}, best final val acc {out['best']:.4f}, target {out['target']:.4f}")
        print(f"{'method':<9} {'to target (s)':>14} {'total (s)':>10} {'final val':>9} {'test acc':>9}")
        for name, r in out["results"].items():
            ttt = f"{r['time_to_target']:.3f}" if r["time_to_target"] is not None else f"> {r['total_seconds']:.3f}"
            print(f"{name:<9} {ttt:>14} {r['total_seconds']:>10.3f} {r['final_val_acc']:>9.4f} {r['test_acc']:>9.4f}")
        res = out["results"]
        row = {}
        for peer in ("sgd", "sklearn"):
            if peer in res:
                value, lower = ratio(res[peer], res["fast"])
                row[f"{peer}_time/fast_time"] = round(value, 2)
                if lower:
                    row[f"{peer}_never_reached_target"] = True
                print(f"{peer}_time / fast_time = {'>' if lower else ''}{value:.1f}")
        row.update({f"{name}_test_acc": round(r["test_acc"], 4) for name, r in res.items()})
        summary[f"d{d}"] = row
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
