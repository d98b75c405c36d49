"""The demo's search stage: every strategy searches every prefix at the same budget with the sweep's user_end
probe as objective; what each found is checked with the rater (completions sampled from the post-RL model)
against the unsearched prefixes and random test prompts.

The prompt is the unit: each prefix is one observation (its found prompt's mean reward over `check_samples`
answers, minus its bare prefix's), so the comparison with the prefixes is paired over prefixes, and the one with
random test prompts compares per-prompt means. Enough prefixes are searched for that to mean something
(`min_prefixes`; the config's prefixes, then openings of test prompts).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from rsearch.jobs.demo_config import SearchCheckConfig
from rsearch.jobs.demo_plots import plot_search
from rsearch.lm import ModelCache, sample_completions
from rsearch.prompts import load_prompts, user_text
from rsearch.results import SearchOutcome, SweepResult
from rsearch.subjects import Subjects
from rsearch.analysis.stats import bootstrap_ci, paired_summary, two_sample_summary
from rsearch.raters import load_rater
from rsearch.scorer import ProbeScorer
from rsearch.searcher import Searcher

log = logging.getLogger("rsearch.demo")


def search_prefixes(cfg: SearchCheckConfig, test_split: str, dataset: str, seed: int) -> list[str]:
    """The config's prefixes, then distinct openings (first `opening_words` words, then one word more, and so on)
    of seeded test prompts until there are `min_prefixes` (or the test prompts run out)."""
    prefixes = list(dict.fromkeys(cfg.prefixes))
    if len(prefixes) >= cfg.min_prefixes:
        return prefixes
    texts = [user_text(m) for _, m in load_prompts(test_split, dataset, 100_000, seed)]
    words = cfg.opening_words
    while len(prefixes) < cfg.min_prefixes and any(len(t.split()) > words for t in texts):
        openings = sorted({" ".join(t.split()[:words]) for t in texts if len(t.split()) > words} - set(prefixes))
        random.Random(seed).shuffle(openings)
        prefixes += openings[:cfg.min_prefixes - len(prefixes)]
        words += 1
    return prefixes


def run_search_check(cfg: SearchCheckConfig, seed: int, test_split: str, subjects: Subjects, sweep: SweepResult,
                     models: ModelCache, directory: Path) -> SearchOutcome:
    """`cfg` is resolved (no None left: see SearchCheckConfig.resolved)."""
    probe_row = sweep.user_end_probe()
    model, tok = models.get(subjects.post)
    scorer = ProbeScorer.from_file(probe_row["path"], model=model, tokenizer=tok, batch_size=cfg.batch_size)
    rater = load_rater(subjects.rater, batch_size=cfg.batch_size)
    randoms = [user_text(m) for _, m in load_prompts(test_split, subjects.dataset, cfg.random_prompts, seed + 1)]
    prefixes = search_prefixes(cfg, test_split, subjects.dataset, seed + 5)

    def check_prompts(prompts: list[str], check_seed: int) -> list[dict]:
        """Per prompt: probe score at user_end, and (with a rater) the reward of post-RL completions."""
        scores = scorer.score_texts(prompts).tolist()
        if rater is None:  # without a rater there is nothing to check the answers against: skip sampling them
            return [{"prompt": p, "probe_score": s, "true_rewards": [], "mean_true_reward": None,
                     "example_completion": None} for p, s in zip(prompts, scores)]
        samples = sample_completions(model, tok, prompts, cfg.check_samples, seed=check_seed,
                                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size)
        flat = [(p, c.text) for p, comps in zip(prompts, samples) for c in comps]
        rewards = rater.rate([p for p, _ in flat], [c for _, c in flat])
        done, k = [], cfg.check_samples
        for i, (p, s, comps) in enumerate(zip(prompts, scores, samples)):
            mine = rewards[i * k:(i + 1) * k]
            done.append({"prompt": p, "probe_score": s, "true_rewards": mine,
                         "mean_true_reward": sum(mine) / len(mine), "example_completion": comps[0].text})
        return done

    baseline_prefix = check_prompts(prefixes, seed + 2)
    baseline_random = check_prompts(randoms, seed + 3)
    strategies = []
    for name in cfg.strategies:
        searcher = Searcher(scorer, strategy=name, budget=cfg.budget, options=cfg.options.get(name),
                            target="prompt", seed=seed)
        results = []
        t = time.perf_counter()
        log.info(f"search {name}: {len(prefixes)} prefixes (budget {cfg.budget} each)")
        for prefix in prefixes:
            results.append(searcher.optimize(prefix))
        seconds = time.perf_counter() - t
        found = check_prompts([r.best.prompt for r in results], seed + 4)
        entry = {"strategy": name, "seconds": round(seconds, 2), "evaluations": [r.evaluations for r in results],
                 "forwards": [r.forwards for r in results],
                 "results": [{"prefix": r.prefix, "found": r.best.prompt, "span": r.best.text,
                              "probe_score": r.best.probe_score, "objective": r.best.score, "forwards": r.forwards,
                              "best_so_far": list(r.best_so_far), **{k: v for k, v in c.items() if k != "prompt"}}
                             for r, c in zip(results, found)],
                 "mean_probe_score": sum(r.best.probe_score for r in results) / len(results),
                 # paired over prefixes: found prompt − its bare prefix
                 "probe_vs_prefix": paired_summary([b["probe_score"] for b in baseline_prefix],
                                                   [r.best.probe_score for r in results], n_boot=cfg.n_boot, seed=seed)}
        if rater is not None:
            entry["true_vs_prefix"] = paired_summary([b["mean_true_reward"] for b in baseline_prefix],
                                                     [c["mean_true_reward"] for c in found], n_boot=cfg.n_boot,
                                                     seed=seed)
            # unpaired, one number per prompt: found prompts' mean rewards against random test prompts'
            entry["true_vs_random"] = two_sample_summary([c["mean_true_reward"] for c in found],
                                                         [b["mean_true_reward"] for b in baseline_random],
                                                         n_boot=cfg.n_boot, seed=seed)
            # exploitation gap per prefix: the probe's gain over the bare prefix − the true gain (issue 12)
            gaps = [(r.best.probe_score - b["probe_score"]) - (c["mean_true_reward"] - b["mean_true_reward"])
                    for r, c, b in zip(results, found, baseline_prefix)]
            lo, hi = bootstrap_ci(gaps, n_boot=cfg.n_boot, seed=seed)
            entry["exploitation_gap"] = {"mean": sum(gaps) / len(gaps), "ci_lo": lo, "ci_hi": hi, "per_prefix": gaps}
        strategies.append(entry)
    result = SearchOutcome(
        probe=probe_row["path"], probe_layer=int(probe_row["layer"]), probe_position="user_end",
        probe_test_pearson=probe_row.get("test_pearson"), budget=cfg.budget, prefixes=prefixes,
        check_samples=cfg.check_samples, rater=subjects.rater,
        target="prompt (the rest of the user's message after the prefix), scored at user_end",
        baseline_prefix=baseline_prefix, baseline_random=baseline_random,
        baseline_prefix_mean_true_reward=_mean([b["mean_true_reward"] for b in baseline_prefix]),
        baseline_random_mean_true_reward=_mean([b["mean_true_reward"] for b in baseline_random]),
        baseline_prefix_mean_probe_score=_mean([b["probe_score"] for b in baseline_prefix]),
        baseline_random_mean_probe_score=_mean([b["probe_score"] for b in baseline_random]),
        strategies=strategies,
        unit="the prompt: per prefix, the mean reward of its check_samples answers; paired over prefixes against "
             "the bare prefix, per-prompt means against random test prompts")
    result.save(directory)
    plot_search(directory / "search.png", result)
    return result


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
