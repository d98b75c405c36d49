"""The demo's search stage: every strategy searches every prefix at the same budget with the sweep's user_end
probe as objective; what each found is checked with the true rater (completions sampled from the post-RL model)
against the unsearched prefixes and random test prompts."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from rsearch.jobs.demo_config import SearchCheckConfig
from rsearch.jobs.demo_plots import plot_search
from rsearch.lm import ModelCache, sample_completions
from rsearch.prompts import load_prompts, user_text
from rsearch.results import SearchOutcome, SweepResult
from rsearch.subjects import Subjects

log = logging.getLogger("rsearch.demo")


def run_search_check(cfg: SearchCheckConfig, seed: int, test_split: str, subjects: Subjects, sweep: SweepResult,
                     models: ModelCache, directory: Path) -> SearchOutcome:
    """`cfg` is resolved (no None left: see SearchCheckConfig.resolved)."""
    from rsearch.analysis.stats import two_sample_summary
    from rsearch.scorer import ProbeScorer
    from rsearch.searcher import Searcher

    probe_row = sweep.user_end_probe()
    model, tok = models.get(subjects.post)
    scorer = ProbeScorer.from_file(probe_row["path"], model=model, tokenizer=tok, batch_size=cfg.batch_size)
    rate = _rater(subjects)
    randoms = [user_text(m) for _, m in load_prompts(test_split, subjects.dataset, cfg.random_prompts, seed + 1)]

    def check_prompts(prompts: list[str], check_seed: int) -> list[dict]:
        """Per prompt: probe score at user_end, and (with a rater) the true reward of post-RL completions."""
        scores = scorer.score_texts(prompts).tolist()
        if not rate:  # without a rater there is nothing to check the answers against: skip sampling them
            return [{"prompt": p, "probe_score": s, "true_rewards": [], "mean_true_reward": None,
                     "example_completion": None} for p, s in zip(prompts, scores)]
        done = []
        samples = sample_completions(model, tok, prompts, cfg.check_samples, seed=check_seed,
                                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch_size)
        for p, s, comps in zip(prompts, scores, samples):
            rewards = [rate(p, c.text) for c in comps]
            done.append({"prompt": p, "probe_score": s, "true_rewards": rewards,
                         "mean_true_reward": sum(rewards) / len(rewards),
                         "example_completion": comps[0].text})
        return done

    baseline_prefix = check_prompts(list(cfg.prefixes), seed + 2)
    baseline_random = check_prompts(randoms, seed + 3)
    pooled = lambda checks: [x for c in checks for x in c["true_rewards"]]  # noqa: E731
    strategies = []
    for name in cfg.strategies:
        searcher = Searcher(scorer, strategy=name, budget=cfg.budget, options=cfg.options.get(name),
                            target="prompt", seed=seed)
        results = []
        t = time.perf_counter()
        for prefix in cfg.prefixes:
            log.info(f"search {name}: {prefix!r} (budget {cfg.budget})")
            results.append(searcher.optimize(prefix))
        seconds = time.perf_counter() - t
        found = check_prompts([r.best.prompt for r in results], seed + 4)
        entry = {"strategy": name, "seconds": round(seconds, 2), "evaluations": [r.evaluations for r in results],
                 "results": [{"prefix": r.prefix, "found": r.best.prompt, "span": r.best.text,
                              "probe_score": r.best.probe_score, "objective": r.best.score,
                              "best_so_far": list(r.best_so_far), **{k: v for k, v in c.items() if k != "prompt"}}
                             for r, c in zip(results, found)],
                 "mean_probe_score": sum(r.best.probe_score for r in results) / len(results),
                 "probe_vs_prefix": two_sample_summary([r.best.probe_score for r in results],
                                                       [b["probe_score"] for b in baseline_prefix],
                                                       n_boot=cfg.n_boot, seed=seed)}
        if rate:
            entry["true_vs_prefix"] = two_sample_summary(pooled(found), pooled(baseline_prefix), n_boot=cfg.n_boot,
                                                         seed=seed)
            entry["true_vs_random"] = two_sample_summary(pooled(found), pooled(baseline_random), n_boot=cfg.n_boot,
                                                         seed=seed)
        strategies.append(entry)
    result = SearchOutcome(
        probe=probe_row["path"], probe_layer=int(probe_row["layer"]), probe_position="user_end",
        probe_test_pearson=probe_row.get("test_pearson"), budget=cfg.budget, prefixes=list(cfg.prefixes),
        check_samples=cfg.check_samples, rater=subjects.rater,
        target="prompt (the rest of the user's message after the prefix), scored at user_end",
        baseline_prefix=baseline_prefix, baseline_random=baseline_random,
        baseline_prefix_mean_true_reward=_mean(pooled(baseline_prefix)),
        baseline_random_mean_true_reward=_mean(pooled(baseline_random)),
        baseline_prefix_mean_probe_score=_mean([b["probe_score"] for b in baseline_prefix]),
        baseline_random_mean_probe_score=_mean([b["probe_score"] for b in baseline_random]),
        strategies=strategies)
    result.save(directory)
    plot_search(directory / "search.png", result)
    return result


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _rater(subjects: Subjects):
    if subjects.rater != "organism":
        return None
    from rsearch.organism.rater import true_score

    return true_score
