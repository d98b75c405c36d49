"""The probe verdict's statistics on constructed numbers: McNemar's exact test, accuracies against the label, the
truth and minimal pairs, the expected-reward target's reliability, and Q1's rule (a probe that ties the bag of
words is a "no", one that beats it a "yes")."""
import numpy as np
import pytest
from scipy.stats import binomtest

from rsearch.analysis.baselines import PairTruth, accuracies, against_baselines, mcnemar, outcomes, strongest_text
from rsearch.analysis.expected_reward import (group_mean_prediction, r_difference, split_half_reliability,
                                              within_group_r)
from rsearch.study.probes import q1_verdict, versus


def test_mcnemar_is_the_exact_binomial_test_of_discordant_pairs():
    a = np.array([1] * 9 + [0] + [1, 1, 0, 0], dtype=bool)
    b = np.array([0] * 9 + [1] + [1, 1, 0, 0], dtype=bool)   # concordant pairs (the last four) do not count
    got = mcnemar(a, b)
    assert (got["a_only"], got["b_only"]) == (9, 1)
    assert got["p"] == pytest.approx(binomtest(9, 10, 0.5).pvalue) and got["p"] < 0.05
    assert mcnemar(a, a)["p"] == 1.0                     # no discordant pair: nothing to tell them apart
    assert mcnemar(b, a)["p"] == got["p"]                 # symmetric


def test_accuracies_against_label_truth_and_minimal_pairs():
    margins = np.array([1.0, 2.0, -1.0, 0.0, 3.0, -2.0])
    truth = np.array([1, 1, 1, 0, -1, -1])               # pair 4: the label disagrees with the truth; pair 3: a tie
    minimal = np.array([True, False, True, False, True, False])
    got = accuracies(margins, PairTruth(truth, minimal))
    assert got["acc"] == pytest.approx((3 + 0.5) / 6)     # a tied score counts half
    assert got["truth_n"] == 5 and got["truth_acc"] == pytest.approx(3 / 5)
    assert got["minimal_n"] == 3 and got["minimal_acc"] == pytest.approx(2 / 3)
    assert got["minimal_truth_acc"] == pytest.approx(1 / 3)
    none = accuracies(margins, PairTruth())
    assert none["truth_acc"] is None and none["minimal_acc"] is None   # unknown, never guessed


def test_ties_are_broken_by_a_seeded_coin_and_the_probe_is_compared_per_baseline():
    ties = np.zeros(2000)
    right = outcomes(ties, seed=3)
    assert (right == outcomes(ties, seed=3)).all() and 0.45 < right.mean() < 0.55
    probe = np.array([1.0] * 80 + [-1.0] * 20)           # right on 80 of 100 pairs
    text = np.array([1.0] * 60 + [-1.0] * 40)            # right on 60, all within the probe's 80
    same = probe.copy()
    vs = against_baselines(probe, {"bow_completion": text, "bow_prompt_completion": same}, PairTruth(), seed=0)
    assert vs["bow_completion"]["p"] == pytest.approx(binomtest(20, 20, 0.5).pvalue)
    assert vs["bow_completion"]["diff"] == pytest.approx(0.2) and vs["bow_prompt_completion"]["p"] == 1.0
    assert strongest_text(vs)[0] == "bow_prompt_completion"   # the stronger text baseline is the one to beat


def test_q1_rule_says_no_on_a_tie_with_the_bag_of_words_and_yes_when_the_probe_beats_it():
    assert versus(0.80, 0.79, 0.35) == "tie" and q1_verdict(0.75, 0.84, "tie") == "ties_text"
    assert versus(0.80, 0.70, 0.001) == "above" and q1_verdict(0.75, 0.84, "above") == "beats_text"
    assert versus(0.70, 0.80, 0.001) == "below" and q1_verdict(0.65, 0.75, "below") == "below_text"
    assert versus(0.80, 0.70, 0.2) == "tie"               # higher, but not resolvably
    assert q1_verdict(0.45, 0.60, "above") == "chance"     # not above chance: no, whatever the baseline
    assert q1_verdict(0.75, 0.84, None) == "no_text_baseline"
    assert versus(0.8, None, None) is None


def test_split_half_reliability_matches_its_theory():
    rng = np.random.default_rng(0)
    n, k, sd_true, sd_noise = 4000, 8, 1.0, 2.0
    means = rng.normal(0, sd_true, n)
    groups = means[:, None] + rng.normal(0, sd_noise, (n, k))
    got = split_half_reliability(groups, seed=1)
    expected = sd_true ** 2 / (sd_true ** 2 + sd_noise ** 2 / k)   # reliability of the mean of k
    assert got["reliability"] == pytest.approx(expected, abs=0.03)
    assert got["ceiling"] == pytest.approx(np.sqrt(expected), abs=0.02)
    # and the ceiling holds: the true means correlate with the k-means at about √reliability
    assert np.corrcoef(means, groups.mean(1))[0, 1] == pytest.approx(got["ceiling"], abs=0.03)


def test_within_group_r_removes_what_the_group_explains():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 200)
    target = groups * 3.0 + rng.normal(0, 1, groups.size)
    by_group = group_mean_prediction(groups, target, groups)   # a task-mean lookup
    assert np.corrcoef(by_group, target)[0, 1] > 0.9          # high across tasks …
    assert abs(within_group_r(by_group + 1e-9 * rng.normal(size=groups.size), target, groups)) < 0.1  # … nothing within
    good = target + rng.normal(0, 0.3, groups.size)
    assert within_group_r(good, target, groups) > 0.9
    d = r_difference(good, by_group, target, n_boot=300)
    assert d["lo"] <= d["diff"] <= d["hi"]
