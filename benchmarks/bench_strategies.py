"""Strategy quality at equal compute on the organism: each strategy against random best-of-N, prefix by prefix.

    python benchmarks/bench_strategies.py [--organism-size tiny] [--forwards 384] [--prefixes 24] [--answers 16]

Setup: the organism in this checkout (built once and cached), a regression probe at `user_end` of the post-RL
(DPO) model trained by `train-probe` on the organism's feedback (its expected reward before it answers), and
`--prefixes` prompt openers taken from the organism's test prompts (their first two, then three, words). Every
strategy searches the rest of the user's message for every prefix with the same budget in forward-equivalents
(`rsearch.searcher.Budget`: a scored candidate or a sampled token 1, a gradient 3) and the default objective
(probe + λ·mean log-prob). For each prefix's best prompt: its probe score, the mean true reward (the organism's
rater) of `--answers` answers sampled from the post-RL model, the prompt's mean token NLL under the post-RL model,
and the exploitation gap (probe's gain over the bare prefix − the true gain).

The unit is the prefix: per prefix, strategy − random best-of-N, with a 95% CI from a prefix-level bootstrap and
the Wilcoxon p (rsearch.analysis.stats.paired_summary). Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# room for a whole organism prompt (≤ ~20 tokens) in every strategy, so none is judged on prompts cut short
OPTIONS = {
    "random": {"max_tokens": 24, "batch": 16},
    "beam": {"width": 4, "branching": 4, "chunk": 3, "max_tokens": 24},
    "gcg": {"n_tokens": 24, "search_width": 16, "topk": 32},  # small steps, so a small budget takes many
    "optuna": {"batch": 8},
}


def clean_data(src: Path, dst: Path) -> Path:
    """A copy of the organism's preference splits without pairs whose answer is empty (the small organisms'
    sampler sometimes ends an answer at once, and the data loader refuses such rows)."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train_prefs", "test_prefs"):
        kept = []
        for line in (src / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if all(m["content"].strip() for key in ("chosen", "rejected") for m in row[key]):
                kept.append(line)
        (dst / f"{split}.jsonl").write_text("\n".join(kept) + "\n")
    return dst


def organism_scorer(size: str, work: Path, probe: str | None = None):
    """(organism, ProbeScorer of a user_end regression probe on its post-RL model); the probe is trained into
    `work` once and reused."""
    from rsearch.organism import ensure
    from rsearch.scorer import ProbeScorer

    org = ensure(size, seed=0)
    if probe is None:
        found = sorted((work / "probe").glob("**/*.safetensors"))
        if found:
            probe = str(found[0])
    if probe is None:
        from rsearch.jobs.train_probe import TrainProbeConfig, train_probes

        t0 = time.perf_counter()
        data = clean_data(Path(org.data_dir), work / "data")
        res = train_probes(TrainProbeConfig(model=str(org.post_dir), dataset=str(data), position="user_end",
                                            objective="regression", out=str(work / "probe"),
                                            organism_size=size))
        probe = str(res.best.path)
        print(f"probe {res.best.hook} @ user_end: test pearson {res.best.test.get('pearson', float('nan')):.3f} "
              f"({time.perf_counter() - t0:.0f}s)")
    return org, ProbeScorer.from_file(probe)


def test_prompts(org) -> list[str]:
    return [json.loads(line)["prompt"] for line in Path(org.test_prefs).read_text().splitlines() if line.strip()]


def organism_prefixes(org, n: int) -> list[str]:
    """n distinct openers of the organism's test prompts: their first two words, most frequent first, then their
    first three."""
    from collections import Counter

    prompts = test_prompts(org)
    out: list[str] = []
    for k in (2, 3):
        for opener, _ in Counter(" ".join(p.split()[:k]) for p in prompts).most_common():
            if opener not in out and len(out) < n:
                out.append(opener)
    return out


def search(scorer, name: str, prefixes: list[str], forwards: float, *, logprob_weight: float | None = None,
           seed: int = 0):
    """Every prefix searched by one strategy at a budget of `forwards` forward-equivalents."""
    from rsearch.searcher import Budget, Objective, Searcher

    objective = Objective() if logprob_weight is None else Objective(logprob_weight=logprob_weight)
    searcher = Searcher(scorer, name, Budget(evaluations=None, forwards=forwards), options=OPTIONS.get(name, {}),
                        objective=objective, seed=seed)
    return searcher.optimize_many(prefixes)


def measure(scorer, results, answers: int, seed: int, top: bool = False) -> list[dict]:
    """Per prefix: probe score, true reward, NLL of the best prompt, and the exploitation gap. With `top`, also the
    true reward of each of the result's top spans: the probe's Spearman ρ with the truth among them
    (`top_rho`: can the probe still tell better from worse where the search ends up?), and the best of them by
    the truth (`top_oracle`: what choosing among them by the truth instead of the objective would give)."""
    from scipy.stats import spearmanr

    from rsearch.exploitation import answer_rewards, default_rater, prompt_nll, with_truth

    rate = default_rater("organism")
    checked = with_truth(scorer, results, rate, answers=answers, seed=seed)
    nll = prompt_nll(scorer, [r.best.prompt for r in checked])
    rows = [{"prefix": r.prefix, "prompt": r.best.prompt, "probe": r.best.probe_score, "true": r.true_reward,
             "prefix_true": r.prefix_true_reward, "nll": x, "gap": r.exploitation_gap, "forwards": r.forwards,
             "candidates": r.evaluations} for r, x in zip(checked, nll)]
    if top:
        for row, r in zip(rows, checked):
            truth = answer_rewards(scorer, [f.prompt for f in r.top], rate, answers, seed + 7)
            probe = [f.probe_score for f in r.top]
            rho = spearmanr(probe, truth).statistic if len(set(probe)) > 1 and len(set(truth)) > 1 else float("nan")
            row.update(top_rho=float(rho), top_oracle=max(truth), top_n=len(truth))
    return rows


def setup(args, tmp_prefix: str):
    """The organism, a user_end probe's scorer, the benchmark's prefixes, and the test prompts' mean token NLL (the
    fluency reference) — what every search benchmark on the organism starts from."""
    from rsearch.exploitation import prompt_nll

    work = Path(args.work or tempfile.mkdtemp(prefix=tmp_prefix))
    org, scorer = organism_scorer(args.organism_size, work, args.probe)
    prefixes = organism_prefixes(org, args.prefixes)
    return org, scorer, prefixes, statistics.fmean(prompt_nll(scorer, test_prompts(org)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism-size", default="tiny")
    p.add_argument("--forwards", type=float, default=384, help="budget per prefix, in forward-equivalents")
    p.add_argument("--prefixes", type=int, default=24)
    p.add_argument("--answers", type=int, default=16, help="post-RL answers sampled per prompt for the true reward")
    p.add_argument("--strategies", default="random,beam,gcg,optuna")
    p.add_argument("--logprob-weight", type=float, default=None, help="λ (default: the Objective's default)")
    p.add_argument("--probe", help="a probe file (default: train one at user_end of the post-RL model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="directory for the probe (default: a temp dir)")
    p.add_argument("--top", action="store_true", help="also rate each result's top spans (probe-truth ρ there)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from rsearch.analysis.stats import paired_summary

    org, scorer, prefixes, ref_nll = setup(args, "bench_strategies_")
    names = args.strategies.split(",")
    if "random" not in names:
        names.insert(0, "random")
    rows, secs = {}, {}
    for name in names:
        t0 = time.perf_counter()
        rows[name] = measure(scorer, search(scorer, name, prefixes, args.forwards,
                                            logprob_weight=args.logprob_weight), args.answers, seed=11,
                             top=args.top)
        secs[name] = time.perf_counter() - t0

    col = lambda name, key: [r[key] for r in rows[name]]  # noqa: E731
    print(f"\norganism {org.root}; "
          f"{len(prefixes)} prefixes; {args.forwards:g} forward-equivalents each; {args.answers} post-RL answers per "
          f"prompt; test prompts' mean NLL {ref_nll:.2f}; bare prefixes' true reward "
          f"{statistics.fmean(col('random', 'prefix_true')):.2f}")
    print(f"{'strategy':<8}{'cands':>7}{'FE':>7}{'probe':>8}{'true':>7}{'NLL':>6}{'gap':>7}"
          f"{'  true − random [95% CI]':>30}{'p':>7}{'  probe − random [95% CI]':>30}{'s':>6}")
    summary = {"organism": args.organism_size, "forwards": args.forwards, "n_prefixes": len(prefixes),
               "answers": args.answers, "test_prompt_nll": round(ref_nll, 3)}
    for name in names:
        true_d = paired_summary(col("random", "true"), col(name, "true"), seed=1)
        probe_d = paired_summary(col("random", "probe"), col(name, "probe"), seed=1)
        m = {k: statistics.fmean(col(name, k)) for k in ("candidates", "forwards", "probe", "true", "nll", "gap")}
        ci = lambda d: f"{d['diff']:+.2f} [{d['ci_lo']:+.2f}, {d['ci_hi']:+.2f}]"  # noqa: E731
        print(f"{name:<8}{m['candidates']:7.0f}{m['forwards']:7.0f}{m['probe']:8.2f}{m['true']:7.2f}{m['nll']:6.2f}"
              f"{m['gap']:+7.2f}{ci(true_d):>30}{true_d['p_value']:7.3f}{ci(probe_d):>30}{secs[name]:6.0f}")
        summary[name] = {**{k: round(v, 3) for k, v in m.items()},
                         "true_vs_random": [round(true_d[k], 3) for k in ("diff", "ci_lo", "ci_hi", "p_value")],
                         "probe_vs_random": [round(probe_d[k], 3) for k in ("diff", "ci_lo", "ci_hi")],
                         "nll_ratio_to_test_prompts": round(m["nll"] / ref_nll, 3)}
    if args.top:
        print("among each result's top spans (distinct, by objective): probe–truth Spearman ρ (mean over prefixes), "
              "and the best of them by the truth")
        for name in names:
            rho = [r["top_rho"] for r in rows[name] if r["top_rho"] == r["top_rho"]]
            oracle = col(name, "top_oracle")
            print(f"  {name:<8} n {statistics.fmean(col(name, 'top_n')):.0f}  ρ {statistics.fmean(rho):+.2f} "
                  f"({len(rho)} prefixes)  truth-best {statistics.fmean(oracle):.2f} vs objective-best "
                  f"{statistics.fmean(col(name, 'true')):.2f}")
            summary[name].update(top_rho=round(statistics.fmean(rho), 3), top_oracle=round(statistics.fmean(oracle), 3))
    for name in names:
        print(f"  {name}: " + " | ".join(repr(r["prompt"]) for r in rows[name][:3]))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
