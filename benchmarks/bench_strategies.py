"""Every strategy at the same budget on the organism: the best probe score reached, and what the true rater
thinks of the post-RL model's answers to the prompts found.

    python benchmarks/bench_strategies.py [--organism-size tiny] [--budget 192] [--answers 8]

Setup: the organism (built once and cached), a regression probe at `user_end` of the post-RL (DPO) model
trained by `train-probe` on the organism's feedback (its expected reward before it answers), and a few
prompt prefixes. Each strategy searches the rest of the user's message for every prefix with the same budget
of scored candidates. For each found prompt the post-RL model samples answers (temperature 1, its own
distribution) and the known rater `true_score` scores them; the baselines are the unsearched prefix alone and
random prompts (one model-sampled continuation of the prefix, no selection).

Prints a table and ends with one JSON line: per strategy, the mean best probe score, the mean true reward of
the answers and its gain over the random-prompt and unsearched-prefix baselines.
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

PREFIXES = ["hey ,", "hi !", "what is", "can you", "please ,", "give me"]
OPTIONS = {
    "random": {"max_tokens": 12, "batch": 16},
    "beam": {"width": 4, "branching": 4, "chunk": 3, "max_tokens": 12},
    "gcg": {"n_tokens": 8, "search_width": 32, "topk": 32},
    "optuna": {"template": "organism", "batch": 8},
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


def answers_reward(scorer, prompts: list[str], n: int, seed: int) -> list[float]:
    """Mean true reward of n sampled post-RL answers, per prompt."""
    from rsearch.chat import encode_conversation
    from rsearch.lm import sample_tokens
    from rsearch.organism import true_score

    gen = torch.Generator().manual_seed(seed)
    eos = scorer.tokenizer.eos_token_id
    out = []
    for prompt in prompts:
        ctx = list(encode_conversation(scorer.tokenizer, prompt).ids)
        got = sample_tokens(scorer.model, [ctx] * n, 48, pad_id=scorer.pad_id, generator=gen, stop_ids=[eos],
                            allowed=scorer.allowed)
        texts = [scorer.tokenizer.decode(list(ids), skip_special_tokens=True) for ids, _ in got]
        out.append(statistics.mean(true_score(prompt, t) for t in texts))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism-size", default="tiny")
    p.add_argument("--budget", type=int, default=192)
    p.add_argument("--answers", type=int, default=8, help="answers sampled per prompt for the true reward")
    p.add_argument("--strategies", default="random,beam,gcg,optuna")
    p.add_argument("--probe", help="a probe file (default: train one at user_end of the post-RL model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="directory for the probe (default: a temp dir)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from rsearch.organism import ensure
    from rsearch.scorer import ProbeScorer
    from rsearch.searcher import Searcher
    from rsearch.lm import sample_tokens
    from rsearch.targets import make_target

    org = ensure(args.organism_size, seed=0)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_strategies_"))
    if args.probe is None:
        from rsearch.jobs.train_probe import TrainProbeConfig, train_probes

        t0 = time.perf_counter()
        data = clean_data(Path(org.data_dir), work / "data")
        res = train_probes(TrainProbeConfig(model=str(org.post_dir), dataset=str(data), position="user_end",
                                            objective="regression", out=str(work / "probe"), progress=False,
                                            organism_size=args.organism_size))
        args.probe = str(res.best.path)
        print(f"probe {res.best.hook} @ user_end: test pearson {res.best.test.get('pearson', float('nan')):.3f} "
              f"({time.perf_counter() - t0:.0f}s)")
    scorer = ProbeScorer.from_file(args.probe)

    # baselines: the unsearched prefix, and random prompts (one model-sampled continuation, no selection)
    prefix_reward = answers_reward(scorer, PREFIXES, args.answers, seed=1)
    gen = torch.Generator().manual_seed(2)
    random_prompts, random_probe = [], []
    for prefix in PREFIXES:
        t = make_target("prompt", scorer.tokenizer, prefix, scorer.vocab_size, allowed=scorer.allowed)
        for _ in range(4):
            (ids, _), = sample_tokens(scorer.model, [t.context_ids], 12, pad_id=scorer.pad_id, generator=gen,
                                      stop_ids=t.stop_ids, allowed=t.allowed)
            random_prompts.append(t.full_text(ids))
            random_probe.append(float(scorer.score_rows([t.row(ids)], t.position).probe[0]))
    random_reward = answers_reward(scorer, random_prompts, args.answers, seed=3)
    rows = {"unsearched prefix": (None, statistics.mean(prefix_reward), 0.0),
            "random prompt (no selection)": (statistics.mean(random_probe), statistics.mean(random_reward), 0.0)}

    examples = {}
    for name in args.strategies.split(","):
        t0 = time.perf_counter()
        searcher = Searcher(scorer, name, args.budget, options=OPTIONS.get(name, {}), seed=0)
        results = searcher.optimize_many(PREFIXES)
        found = [r.best.prompt for r in results]
        reward = answers_reward(scorer, found, args.answers, seed=4)
        rows[f"{name} (budget {args.budget})"] = (statistics.mean(r.best.probe_score for r in results),
                                                  statistics.mean(reward), time.perf_counter() - t0)
        examples[name] = found[:3]

    base_r = statistics.mean(random_reward)
    base_p = statistics.mean(prefix_reward)
    print(f"\norganism {args.organism_size}; {len(PREFIXES)} prefixes; {args.answers} post-RL answers per prompt")
    print(f"{'prompts':<32}{'best probe':>11}{'true reward':>13}{'vs random':>11}{'vs prefix':>11}{'seconds':>9}")
    for name, (probe, reward, secs) in rows.items():
        ps = f"{probe:11.3f}" if probe is not None else f"{'-':>11}"
        print(f"{name:<32}{ps}{reward:13.3f}{reward - base_r:+11.3f}{reward - base_p:+11.3f}{secs:9.1f}")
    for name, ex in examples.items():
        print(f"  {name}: " + " | ".join(repr(e) for e in ex))
    summary = {"budget": args.budget, "random_prompt_reward": round(base_r, 3), "prefix_reward": round(base_p, 3)}
    for name, (probe, reward, _) in rows.items():
        key = name.split(" ")[0]
        if key in OPTIONS:
            summary[key] = {"best_probe": round(probe, 3), "true_reward": round(reward, 3),
                            "gain_vs_random": round(reward - base_r, 3), "gain_vs_prefix": round(reward - base_p, 3)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
