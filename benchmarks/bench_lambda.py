"""The fluency weight λ of the search objective (probe + λ·mean log-prob of the searched span), measured on the
organism: per λ and strategy, the probe score, the true reward and the mean token NLL of the prompts found.

    python benchmarks/bench_lambda.py [--lambdas 0,0.3,1,3] [--strategies random,beam,gcg] [--forwards 384]

Same setup as bench_strategies.py (the organism in this checkout, a user_end regression probe on its post-RL
model, openers of its test prompts as prefixes, an equal budget in forward-equivalents). The NLL is the found
prompt's (the whole user message's) under the post-RL model, beside the organism's test prompts' NLL: a λ that
keeps GCG within 1.5× of it while losing the least true reward is the default (`Objective.logprob_weight`).
The true reward's difference from λ = 0 is paired by prefix, with a prefix-level bootstrap 95% CI. Ends with one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from bench_strategies import measure, search, setup


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism-size", default="tiny")
    p.add_argument("--lambdas", default="0,0.3,1,3")
    p.add_argument("--strategies", default="random,beam,gcg")
    p.add_argument("--forwards", type=float, default=384, help="budget per prefix, in forward-equivalents")
    p.add_argument("--prefixes", type=int, default=12)
    p.add_argument("--answers", type=int, default=16)
    p.add_argument("--probe")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from rsearch.analysis.stats import paired_summary

    org, scorer, prefixes, ref_nll = setup(args, "bench_lambda_")
    lambdas = [float(x) for x in args.lambdas.split(",")]
    print(f"organism {org.root}; {len(prefixes)} prefixes; {args.forwards:g} forward-equivalents each; "
          f"test prompts' mean NLL {ref_nll:.2f}")
    print(f"{'strategy':<8}{'λ':>5}{'probe':>8}{'true':>7}{'NLL':>6}{'NLL/test':>9}{'gap':>7}"
          f"{'  true − (λ=0) [95% CI]':>28}{'s':>6}  example")
    summary: dict = {"organism": args.organism_size, "forwards": args.forwards, "n_prefixes": len(prefixes),
                     "test_prompt_nll": round(ref_nll, 3)}
    for name in args.strategies.split(","):
        base = None
        for lam in lambdas:
            t0 = time.perf_counter()
            rows = measure(scorer, search(scorer, name, prefixes, args.forwards, logprob_weight=lam), args.answers,
                           seed=11)
            secs = time.perf_counter() - t0
            m = {k: statistics.fmean(r[k] for r in rows) for k in ("probe", "true", "nll", "gap")}
            base = base or rows
            d = paired_summary([r["true"] for r in base], [r["true"] for r in rows], seed=1)
            print(f"{name:<8}{lam:5g}{m['probe']:8.2f}{m['true']:7.2f}{m['nll']:6.2f}{m['nll'] / ref_nll:9.2f}"
                  f"{m['gap']:+7.2f}{d['diff']:+12.2f} [{d['ci_lo']:+.2f}, {d['ci_hi']:+.2f}]{secs:6.0f}  "
                  f"{rows[0]['prompt']!r}")
            summary[f"{name}@{lam:g}"] = {**{k: round(v, 3) for k, v in m.items()},
                                          "nll_ratio": round(m["nll"] / ref_nll, 3),
                                          "true_vs_lambda0": [round(d[k], 3) for k in ("diff", "ci_lo", "ci_hi")]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
