"""Analyses of the pre/post comparison: paired statistics, sampling, the source probe, direction vs update."""
from rsearch.analysis.stats import METRICS_TEST, bootstrap_ci, paired_summary, per_prompt_means, verdict

__all__ = ["METRICS_TEST", "bootstrap_ci", "paired_summary", "per_prompt_means", "verdict"]
