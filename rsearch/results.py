"""Typed results of the study's stages, as written to disk (metrics.json, compare.json, source.json,
direction.json, search.json, steer.json) and read back by the next stage and the report.

Each is a frozen record (`rsearch.record.Record`) whose fields are exactly the keys of its JSON file, typed down
to every number: rows, per-strategy entries and statistics are records of their own. `from_dict` fails at once,
with one line naming the file and the path of the key, when a key is missing, unknown or of the wrong type, and
reading a key that is no field raises KeyError: a stage and its readers cannot drift apart. A nested field left
out of the JSON (a number computed only in some settings) reads as absent (`"key" in row` is False). The jobs'
settings (`config`) and a probe file's metadata stay mappings: they are the job's `Config.to_dict()` and the
probe's header, typed where they are defined.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rsearch.errors import RsearchError
from rsearch.io_utils import write_json
from rsearch.record import ABSENT, Record, coerce

R = TypeVar("R", bound="StageResult")


# ----- the records inside the results (each docstring: where it appears) -----


@dataclass(frozen=True, kw_only=True)
class PairedSummary(Record):
    """Post − pre (or found − prefix) of one metric, paired by prompt: means, difference, its bootstrap CI over
    prompts, Wilcoxon and t-test p-values, effect size. (In ComparisonResult.metrics.*.)"""
    n_prompts: int | None = ABSENT
    mean_pre: float | None = ABSENT
    mean_post: float | None = ABSENT
    diff: float | None = ABSENT
    ci_lo: float | None = ABSENT
    ci_hi: float | None = ABSENT
    p_value: float | None = ABSENT
    p_value_ttest: float | None = ABSENT
    effect_size: float | None = ABSENT
    frac_post_higher: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Correlation(Record):
    """Pearson r (with its CI over prompts) and Spearman ρ between two per-completion scores. (In
    ComparisonResult.correlations.*.)"""
    pearson: float | None = ABSENT
    pearson_lo: float | None = ABSENT
    pearson_hi: float | None = ABSENT
    spearman: float | None = ABSENT
    n: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class DirectionRow(Record):
    """One layer of the direction analysis: the RL update's cosine with the probe direction beside its nulls, and the
    probe's reading of fixed texts and of what each model writes. (In DirectionResult.rows[].)"""
    layer: int | None = ABSENT
    hook: str | None = ABSENT
    cos: float | None = ABSENT
    isotropic_abs_cos_p95: float | None = ABSENT
    cov_abs_cos_p95: float | None = ABSENT
    cov_abs_cos_family95: float | None = ABSENT
    cov_abs_cos_mean: float | None = ABSENT
    abs_cos_percentile_vs_cov: float | None = ABSENT
    cos_update_vs_mean_activation: float | None = ABSENT
    update_norm: float | None = ABSENT
    update_rel_norm: float | None = ABSENT
    d_model: int | None = ABSENT
    n_inputs: int | None = ABSENT
    n_shuffled: int | None = ABSENT
    shuffled_cos: list[float] = ABSENT
    shuffled_abs_cos_mean: float | None = ABSENT
    shuffled_abs_cos_p95: float | None = ABSENT
    shuffled_abs_cos_family95: float | None = ABSENT
    null_abs_cos_family95: float | None = ABSENT
    beyond_null: bool | None = ABSENT
    probe_shift: float | None = ABSENT
    fixed_std_shift: float | None = ABSENT
    fixed_std_shift_null_family95: float | None = ABSENT
    writes_std_diff: float | None = ABSENT
    writes_std_diff_lo: float | None = ABSENT
    writes_std_diff_hi: float | None = ABSENT
    writes_null_p95: float | None = ABSENT
    writes_null_family95: float | None = ABSENT
    writes_beyond_null: bool | None = ABSENT
    writes_n_prompts: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class CheckedPrompt(Record):
    """A prompt the search check rated: its probe score and the true rewards of answers sampled to it. (In
    SearchOutcome.baseline_prefix[].)"""
    prompt: str | None = ABSENT
    probe_score: float | None = ABSENT
    true_rewards: list[float] = ABSENT
    mean_true_reward: float | None = ABSENT
    example_completion: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class FoundPrompt(Record):
    """What one search found from one prefix, with its best-so-far curve and the true rewards of its answers. (In
    SearchOutcome.strategies[].results[].)"""
    prefix: str | None = ABSENT
    found: str | None = ABSENT
    span: str | None = ABSENT
    probe_score: float | None = ABSENT
    objective: float | None = ABSENT
    forwards: float | None = ABSENT
    best_so_far: list[float] = ABSENT
    true_rewards: list[float] = ABSENT
    mean_true_reward: float | None = ABSENT
    example_completion: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class TwoSampleSummary(Record):
    """Two unpaired samples (found prompts against random prompts): means, difference, its CI and the Mann–Whitney
    p-value. (In SearchOutcome.strategies[].true_vs_random.)"""
    n_a: int | None = ABSENT
    n_b: int | None = ABSENT
    mean_a: float | None = ABSENT
    mean_b: float | None = ABSENT
    diff: float | None = ABSENT
    ci_lo: float | None = ABSENT
    ci_hi: float | None = ABSENT
    p_value: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class ExploitationGap(Record):
    """The probe's gain over the prefix minus the true gain, per prefix and its mean with a CI. (In
    SearchOutcome.strategies[].exploitation_gap.)"""
    mean: float | None = ABSENT
    ci_lo: float | None = ABSENT
    ci_hi: float | None = ABSENT
    per_prefix: list[float] = ABSENT


@dataclass(frozen=True, kw_only=True)
class StrategyOutcome(Record):
    """One strategy's searches over every prefix, and the checks of what it found. (In SearchOutcome.strategies[].)"""
    strategy: str | None = ABSENT
    seconds: float | None = ABSENT
    evaluations: list[int] = ABSENT
    forwards: list[float] = ABSENT
    results: list[FoundPrompt] = ABSENT
    mean_probe_score: float | None = ABSENT
    probe_vs_prefix: PairedSummary | None = ABSENT
    true_vs_prefix: PairedSummary | None = ABSENT
    true_vs_random: TwoSampleSummary | None = ABSENT
    exploitation_gap: ExploitationGap | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class SourceAccuracy(Record):
    """Accuracy (with its CI over prompts) and AUROC of telling which model wrote a completion. (In
    SourceResult.rows[].val.)"""
    accuracy: float | None = ABSENT
    accuracy_lo: float | None = ABSENT
    accuracy_hi: float | None = ABSENT
    n: int | None = ABSENT
    n_prompts: int | None = ABSENT
    auroc: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class SourceCell(Record):
    """One layer × position of the source probe, on the validation and the test prompts. (In SourceResult.rows[].)"""
    hook: str | None = ABSENT
    layer: int | None = ABSENT
    position: str | None = ABSENT
    val: SourceAccuracy | None = ABSENT
    test: SourceAccuracy | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class CurvePoint(Record):
    """One α of a steering dose–response: the mean over prompts and its CI. (In SteerResult.metrics.*.*.curves.*[].)"""
    alpha: float | None = ABSENT
    mean: float | None = ABSENT
    lo: float | None = ABSENT
    hi: float | None = ABSENT
    n: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Interval(Record):
    """A mean over prompts with its 95% bootstrap interval. (In SteerResult.metrics.*.*.slopes.*.)"""
    mean: float | None = ABSENT
    lo: float | None = ABSENT
    hi: float | None = ABSENT
    n: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class DoseResponse(Record):
    """One metric's dose–response curves per direction (probe, random, shuffled) and their slopes per unit α. (In
    SteerResult.metrics.*.*.)"""
    curves: dict[str, list[CurvePoint]] = ABSENT
    slopes: dict[str, Interval] = ABSENT


@dataclass(frozen=True, kw_only=True)
class PatchEffect(Record):
    """Patching one layer × position from one model into the other: the change of the DPO margin beside the null
    (another pair's activation). (In SteerResult.patching.rows[].)"""
    direction: str | None = ABSENT
    layer: int | None = ABSENT
    hook: str | None = ABSENT
    position: str | None = ABSENT
    delta: Interval | None = ABSENT
    delta_null: Interval | None = ABSENT
    delta_minus_null: Interval | None = ABSENT
    fraction_of_margin: float | None = ABSENT
    verdict: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Patching(Record):
    """The patching analysis: the test pairs' DPO margin and every layer × position effect. (In SteerResult.patching.)"""
    n_pairs: int | None = ABSENT
    margin: Interval | None = ABSENT
    rows: list[PatchEffect] = ABSENT


@dataclass(frozen=True, kw_only=True)
class SplitMetrics(Record):
    """A probe's metrics on one split (or one control: length, shuffled labels). (In SweepResult.rows[].val.)"""
    n: float | None = ABSENT
    n_pairs: float | None = ABSENT
    loss: float | None = ABSENT
    pairwise_acc: float | None = ABSENT
    pairwise_acc_lo: float | None = ABSENT
    pairwise_acc_hi: float | None = ABSENT
    pearson: float | None = ABSENT
    spearman: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class HeldOutMetrics(SplitMetrics):
    """A probe's metrics on the test split: a split's, the r with the user_end target and, where the rater is known,
    the truth and minimal-pair checks. (In SweepResult.rows[].test.)"""
    r: float | None = ABSENT
    r_lo: float | None = ABSENT
    r_hi: float | None = ABSENT
    within_task_r: float | None = ABSENT
    truth_acc: float | None = ABSENT
    truth_n: int | None = ABSENT
    minimal_acc: float | None = ABSENT
    minimal_n: int | None = ABSENT
    minimal_truth_acc: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class VersusBaseline(Record):
    """A probe against one baseline on the same test pairs (McNemar), or its r against the prompt bag of words at
    user_end. (In SweepResult.rows[].vs_baselines.*.)"""
    r: float | None = ABSENT
    diff: float | None = ABSENT
    diff_lo: float | None = ABSENT
    diff_hi: float | None = ABSENT
    acc: float | None = ABSENT
    p: float | None = ABSENT
    probe_only: int | None = ABSENT
    baseline_only: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class ProbeCell(Record):
    """One fitted probe of the sweep (layer × position), flattened with its baselines, and its nested metrics. (In
    SweepResult.rows[].)"""
    hook: str | None = ABSENT
    layer: int | None = ABSENT
    position: str | None = ABSENT
    objective: str | None = ABSENT
    embedding: bool | None = ABSENT
    test_pairwise_acc: float | None = ABSENT
    test_pairwise_acc_lo: float | None = ABSENT
    test_pairwise_acc_hi: float | None = ABSENT
    test_truth_acc: float | None = ABSENT
    test_minimal_acc: float | None = ABSENT
    test_minimal_truth_acc: float | None = ABSENT
    test_pearson: float | None = ABSENT
    test_spearman: float | None = ABSENT
    test_auroc: Any = ABSENT
    test_r: float | None = ABSENT
    test_r_lo: float | None = ABSENT
    test_r_hi: float | None = ABSENT
    test_within_task_r: float | None = ABSENT
    val_pairwise_acc: float | None = ABSENT
    val_pearson: float | None = ABSENT
    cv: float | None = ABSENT             # the cross-validated score that chose among the cells
    cv_lo: float | None = ABSENT
    cv_hi: float | None = ABSENT
    selected_share: float | None = ABSENT  # share of prompt resamples in which this cell wins
    note: str | None = ABSENT              # why a number is missing (a constant input or target)
    text_baseline: str | None = ABSENT
    text_acc: float | None = ABSENT
    probe_minus_text: float | None = ABSENT
    p_vs_text: float | None = ABSENT
    dpo_acc: float | None = ABSENT
    p_vs_dpo: float | None = ABSENT
    logprob_acc: float | None = ABSENT
    p_vs_logprob: float | None = ABSENT
    prompt_bow_r: float | None = ABSENT
    r_minus_prompt_bow: float | None = ABSENT
    r_minus_prompt_bow_lo: float | None = ABSENT
    r_minus_prompt_bow_hi: float | None = ABSENT
    length_pairwise_acc: float | None = ABSENT
    length_pearson: float | None = ABSENT
    shuffled_pairwise_acc: float | None = ABSENT
    shuffled_pearson: float | None = ABSENT
    seconds: float | None = ABSENT
    path: str | None = ABSENT
    val: SplitMetrics | None = ABSENT
    test: HeldOutMetrics | None = ABSENT
    length_control: SplitMetrics | None = ABSENT
    shuffled_control: SplitMetrics | None = ABSENT
    vs_baselines: dict[str, VersusBaseline] = ABSENT


@dataclass(frozen=True, kw_only=True)
class BaselineScore(Record):
    """One baseline (bag of words, DPO reward, log-prob) on the test pairs: accuracy with its CI, and the truth checks.
    (In SweepResult.baselines.pairs.scores.*.)"""
    n: int | None = ABSENT
    acc: float | None = ABSENT
    acc_lo: float | None = ABSENT
    acc_hi: float | None = ABSENT
    truth_acc: float | None = ABSENT
    truth_n: int | None = ABSENT
    minimal_acc: float | None = ABSENT
    minimal_n: int | None = ABSENT
    minimal_truth_acc: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class PairBaselines(Record):
    """The baselines fitted and scored on the test pairs. (In SweepResult.baselines.pairs.)"""
    n: int | None = ABSENT
    truth_known: bool | None = ABSENT
    minimal_known: bool | None = ABSENT
    labels: dict[str, str] = ABSENT
    scores: dict[str, BaselineScore] = ABSENT
    text_l2: dict[str, float] = ABSENT  # the text baselines' penalties, chosen on validation
    seconds: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Reliability(Record):
    """The user_end target's split-half reliability (the ceiling on any r). (In
    SweepResult.baselines.user_end.reliability.)"""
    n_prompts: int | None = ABSENT
    r_half: float | None = ABSENT
    reliability: float | None = ABSENT
    ceiling: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class RInterval(Record):
    """A correlation with its CI over prompts. (In SweepResult.baselines.user_end.prompt_bow.)"""
    r: float | None = ABSENT
    r_lo: float | None = ABSENT
    r_hi: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class UserEndTarget(Record):
    """The user_end target (the expected reward of the policy's answer): how it was made and what a prompt-only text
    model reaches. (In SweepResult.baselines.user_end.)"""
    target: str | None = ABSENT
    k: int | None = ABSENT
    n_prompts: dict[str, int] = ABSENT
    reliability: Reliability | None = ABSENT
    prompt_bow: RInterval | None = ABSENT
    task_mean: RInterval | None = ABSENT
    within_task_prompt_bow: float | None = ABSENT
    test_target_sd: float | None = ABSENT
    seconds: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class PlantedShare(Record):
    """One strength of the planted signal: its share of the activation variance, the share of plants Q1's rule
    detected, and the SNR along the planted direction. (In SweepResult.baselines.planted.curve.)"""
    share: float
    detected: float
    hits: int
    snr: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class PlantedPower(Record):
    """The best answer-position cell's planted-signal power (rsearch.analysis.planted_power): the minimal detectable
    effect (None: not reached by max_share). (In SweepResult.baselines.planted; the report's Q1.mde.)"""
    mde: float | None
    curve: list[PlantedShare]
    n_plants: int
    power: float
    alpha: float
    max_share: float
    hook: str
    position: str
    text_baseline: str
    signal: str


@dataclass(frozen=True, kw_only=True)
class SweepBaselines(Record):
    """The sweep's baselines: on the test pairs, and for the user_end target; the planted-signal power of the
    best cell. (In SweepResult.baselines.)"""
    pairs: PairBaselines | None = ABSENT
    user_end: UserEndTarget | None = ABSENT
    planted: PlantedPower | None = ABSENT



# ----- the stages' results -----

@dataclass(frozen=True, kw_only=True)
class StageResult(Record):
    FILE = ""  # the file name a stage writes it to

    def __post_init__(self) -> None:
        # built directly (not from JSON): nested mappings become their records, checked the same way
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            where = f"{type(self).__name__}.{f.name}"
            object.__setattr__(self, f.name, coerce(hints[f.name], getattr(self, f.name), where))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], *, where: str = "") -> R:
        try:
            return super().from_dict(data, where=where or cls.FILE)
        except RsearchError as e:
            raise RsearchError(f"{e} (rerun the stage that wrote it)") from None

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        p = Path(path)
        return cls.from_dict(json.loads(p.read_text()), where=str(p))

    def save(self, directory: str | Path) -> str:
        """Writes FILE under `directory` atomically; returns the file's name."""
        write_json(Path(directory) / self.FILE, self.to_dict())
        return self.FILE


def selection_score(row) -> float:
    """A sweep row's score for choosing a cell: its cross-validated score, else its validation metric."""
    for key in ("cv", "val_pairwise_acc" if row.get("objective") != "regression" else "val_pearson"):
        v = row.get(key)
        if v is not None and v == v:
            return float(v)
    return float("-inf")


@dataclass(frozen=True, kw_only=True)
class SweepResult(StageResult):
    """train-probe's metrics.json: every fitted probe's row and the best (by cross-validation, or validation)."""

    FILE = "metrics.json"
    config: dict[str, Any]
    n_pairs: dict[str, int]
    best: ProbeCell
    best_probe: str
    rows: list[ProbeCell]
    baselines: SweepBaselines   # the test pairs' baselines ("pairs") and the user_end target's ("user_end")

    @property
    def layers(self) -> list[int]:
        return sorted({int(r["layer"]) for r in self.rows})

    @property
    def hook_kind(self) -> str:
        return self.config["hook_kind"]

    def user_end_probe(self) -> ProbeCell:
        """The best prompt-only probe (user_end), chosen by cross-validated Pearson r (validation r in sweeps
        without cross-validation); the token embeddings (layer 0) only when nothing else was fitted."""
        rows = [r for r in self.rows if r["position"] == "user_end"]
        if not rows:
            raise RsearchError("the sweep has no user_end probe to search with")
        rows = [r for r in rows if not r.get("embedding")] or rows
        return max(rows, key=selection_score)


@dataclass(frozen=True, kw_only=True)
class ComparisonResult(StageResult):
    """compare's compare.json: paired statistics of pre- vs post-RL completions over prompts."""

    FILE = "compare.json"
    n_prompts: int
    n_completions: dict[str, int]
    n_empty: dict[str, int]
    test: str
    ci: str
    metrics: dict[str, PairedSummary]
    correlations: dict[str, Correlation]
    config: dict[str, Any]
    pre: str
    post: str
    dataset: str
    prompts: str
    beta: float
    beta_source: str
    rater: str | None
    k: int
    probe: str
    probe_meta: dict[str, Any]
    table: str
    seconds: float
    figures: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class SourceResult(StageResult):
    """The source probe: which model wrote a completion, per layer × position, split by prompt."""

    FILE = "source.json"
    rows: list[SourceCell]
    best: SourceCell
    length_control: SourceAccuracy
    n: dict[str, int]
    n_prompts: dict[str, int]
    split: str
    objective: str
    reader: str
    ci: str


@dataclass(frozen=True, kw_only=True)
class DirectionResult(StageResult):
    """Per layer, the RL update's cosine with the reward probe's direction against activation-shaped random
    directions and shuffled-label probes; and the probe's reading of what each model writes."""

    FILE = "direction.json"
    position: str
    n_random: int
    n_shuffled: int
    rows: list[DirectionRow]
    inputs: str


@dataclass(frozen=True, kw_only=True)
class SearchOutcome(StageResult):
    """Every strategy's found prompts, checked against the unsearched prefixes and random prompts."""

    FILE = "search.json"
    probe: str
    probe_layer: int
    probe_position: str
    probe_test_pearson: float | None
    budget: int
    prefixes: list[str]
    check_samples: int
    rater: str | None
    target: str
    baseline_prefix: list[CheckedPrompt]
    baseline_random: list[CheckedPrompt]
    baseline_prefix_mean_true_reward: float | None
    baseline_random_mean_true_reward: float | None
    baseline_prefix_mean_probe_score: float | None
    baseline_random_mean_probe_score: float | None
    strategies: list[StrategyOutcome]
    unit: str


@dataclass(frozen=True, kw_only=True)
class SteerResult(StageResult):
    """`rsearch steer`'s steer.json: the steering dose–response per model and metric, and the patching effects."""

    FILE = "steer.json"
    config: dict[str, Any]
    pre: str
    post: str
    dataset: str
    rater: str | None
    beta: float
    probe: str
    probe_meta: dict[str, Any]
    hook: str
    positions_from: str
    alphas: list[float]
    alpha_unit: str = "norm"  # steer.json written before α had a choice of unit: the norm
    models: list[str]
    n_prompts: int
    k: int
    n_random: int
    fit_pairs: int
    scale: dict[str, float]
    metrics: dict[str, dict[str, DoseResponse]]  # model → metric → its dose–response
    patching: Patching | None
    table: str
    figures: dict[str, str]
    seconds: float
