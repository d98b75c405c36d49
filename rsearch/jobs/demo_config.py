"""DemoConfig: the demo's settings, made of the other jobs' configs (train-probe's sweep, compare) and the
settings of the three analyses, plus what every stage shares (the subjects, seed, dtype, test split)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rsearch.config import Config, check, check_device, setting
from rsearch.jobs.compare import CompareConfig
from rsearch.jobs.steer import SteerConfig
from rsearch.jobs.train_probe import TrainProbeConfig
from rsearch.positions import parse_position
from rsearch.raters import check_spec as check_rater
from rsearch.strategies.base import make_strategy
from rsearch.study.stage import check_stage_options

DEMO_POSITIONS = ("user_end", "completion_start", "completion_frac:0.25", "completion_frac:0.5",
                  "completion_frac:0.75", "completion_end", "-1", "completion_mean")
# at a budget of tens of evaluations GCG must take small steps to take more than one
DEMO_SEARCH_OPTIONS = {"gcg": {"n_tokens": 8, "search_width": 16, "topk": 32}}

# fields of the jobs' configs that the demo sets itself (from its shared settings, the subjects and the stages'
# directories); giving them in a section is an error, so a setting has one home
WIRED = {
    "train_probe": ("model", "dataset", "test_split", "dtype", "device", "seed", "out", "sweep", "organism_size",
                    "revision", "trust_remote_code", "pre", "rater", "workers",
                    "ray_address"),
    "compare": ("pre", "post", "probe", "prompts", "dataset", "seed", "beta", "rater", "dtype", "device", "out",
                "organism_size", "revision_pre", "revision_post", "workers", "ray_address"),
    "causal": ("pre", "post", "probe", "dataset", "prompts", "seed", "beta", "rater", "dtype", "device", "out",
               "organism_size"),
}


@dataclass(frozen=True)
class SourceConfig(Config):
    """The source probe: which model wrote a completion (reads the sweep's layers, compare's completions)."""

    positions: tuple[str, ...] = ("completion_mean", "-1")

    def __post_init__(self) -> None:
        for p in self.positions:
            parse_position(p)


@dataclass(frozen=True)
class DirectionConfig(Config):
    """The RL update against the reward probe's direction, per layer, against two nulls: `n_random` random
    directions shaped like the activations (their covariance), and `n_shuffled` probes fitted like the reward
    probe on shuffled labels (0: that null is left out)."""

    n_random: int = 1000
    n_shuffled: int = 10

    def __post_init__(self) -> None:
        check(self.n_random >= 20, f"n_random: use at least 20 random directions, got {self.n_random}")
        check(self.n_shuffled == 0 or self.n_shuffled >= 3,
              f"n_shuffled: use 0 or at least 3 shuffled-label probes, got {self.n_shuffled}")


@dataclass(frozen=True)
class SearchCheckConfig(Config):
    """Every strategy searches every prefix at the same budget; what each found is checked with the true rater.

    Args:
        options: strategy name → its options.
        check_samples: completions sampled from the post-RL model per prompt to check a found prompt.
        random_prompts: test prompts forming the "random prompts" baseline.
        min_prefixes: prefixes searched at least (the prompt is the unit of Q5's statistics); when `prefixes`
            gives fewer, the rest are the openings (first `opening_words` words, then longer) of seeded test prompts.
        max_new_tokens, sample_batch_size, batch_size, n_boot: None takes the comparison's.
    """

    strategies: tuple[str, ...] = ("random", "beam", "gcg", "optuna")
    budget: int = 128
    prefixes: tuple[str, ...] = ("hey ,", "please ,", "what is")
    options: dict = dataclasses.field(default_factory=lambda: {k: dict(v) for k, v in DEMO_SEARCH_OPTIONS.items()})
    check_samples: int = 16
    random_prompts: int = 48
    min_prefixes: int = 20
    opening_words: int = 2
    max_new_tokens: int | None = None
    sample_batch_size: int | None = None
    batch_size: int | None = None
    n_boot: int | None = None

    def __post_init__(self) -> None:
        check(self.budget >= 1, "budget: must be at least 1")
        check(bool(self.prefixes), "prefixes: give at least one prefix")
        check(self.check_samples >= 1 and self.random_prompts >= 1, "check_samples/random_prompts: must be ≥ 1")
        check(self.min_prefixes >= 0 and self.opening_words >= 1, "min_prefixes ≥ 0 and opening_words ≥ 1")
        check(isinstance(self.options, dict) and all(isinstance(v, dict) for v in self.options.values()),
              "options: a mapping of strategy name → options")
        for name in dict.fromkeys(self.strategies + tuple(self.options)):  # checked now, not after four stages
            make_strategy(name, self.options.get(name))

    def resolved(self, compare: CompareConfig) -> "SearchCheckConfig":
        """Every None taken from the comparison's settings: what the search stage runs with (and is keyed by)."""
        return dataclasses.replace(self, **{k: getattr(compare, k) for k in
                                            ("max_new_tokens", "sample_batch_size", "batch_size", "n_boot")
                                            if getattr(self, k) is None})


@dataclass(frozen=True)
class DemoConfig(Config):
    """Every setting of the demo; the defaults fit the README's time budget on 2 CPU cores.

    Shared by every stage: the subjects (pre, post, dataset: empty means the embedded organism's of
    `organism_size`; rater: auto, organism or none; beta: None takes the organism's or 0.1), seed, dtype and
    the test split. Each stage's own settings are a section: `train_probe` (the sweep), `compare`, `source`,
    `direction`, `search`, `causal` (`rsearch steer`'s settings: steering along the best probe and patching).

    threads: torch's intra-op threads for the stages after the organism (0: torch's default). One thread is the
    default: these models are small, and on 2 cores shared with other work torch's second thread made sampling
    ~38× slower here (0.9 s → 36 s for 240 completions); alone it gains at most ~2×.
    """

    pre: str = setting("", help="pre-RL model (default: the organism's)")
    post: str = setting("", help="post-RL model (default: the organism's)")
    dataset: str = setting("", help="feedback dataset (default: the organism's)")
    test_split: str = setting("test_prefs", help="split the sweep tests on and compare and search take prompts from")
    organism_size: str = setting("demo", choices=("tiny", "demo"))
    organism_variant: str = setting("standard", choices=("standard", "reward-reading"),
                                    help="the organism to study: standard, or reward-reading (the positive control: "
                                         "its DPO trained linear reward heads on the residual stream, 2/3 of the way up)")
    seed: int = setting(0)
    dtype: str = setting("float32")
    beta: float | None = setting(None, help="DPO beta (default: the organism's or 0.1)")
    rater: str = setting("auto", help="auto, organism, none, a local reward model directory, "
                         "module.path:callable, or judge:MODEL (see rsearch.raters)")
    revision_pre: str = setting("", help="hub revision (branch, tag or commit) of the pre-RL model")
    revision_post: str = setting("", help="hub revision (branch, tag or commit) of the post-RL model")
    stages: tuple[str, ...] = setting((), flag="--stage", repeat=True, metavar="MODULE:CLASS",
                                      help="an extra stage, as module.path:Class (repeatable; see rsearch.study.stage)")
    stage_options: dict = setting(default_factory=dict, cli=False, help="extra stage name → its options")
    skip: tuple[str, ...] = setting((), repeat=True, metavar="STAGE",
                                    help="a stage to leave out, with every stage that reads it (repeatable)")
    train_probe: TrainProbeConfig = dataclasses.field(default_factory=lambda: TrainProbeConfig(
        positions=DEMO_POSITIONS, max_train=3000, max_test=600, fitter="fast", extract_batch_size=64,
        expected_reward_k=8, expected_reward_max_train=400, max_new_tokens=48, sample_batch_size=256))
    compare: CompareConfig = dataclasses.field(default_factory=lambda: CompareConfig(
        n=200, k=4, max_new_tokens=48, sample_batch_size=256, batch_size=64))
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    direction: DirectionConfig = dataclasses.field(default_factory=DirectionConfig)
    search: SearchCheckConfig = dataclasses.field(default_factory=SearchCheckConfig)
    causal: SteerConfig = dataclasses.field(default_factory=lambda: SteerConfig(
        n=24, k=2, alphas=(-1.0, -0.5, 0.0, 0.5, 1.0), alpha_unit="norm", n_random=2, max_new_tokens=48,
        patch_pairs=32))  # the organism's README figures were measured in norm units
    device: str = setting("auto", runtime=True)
    threads: int = setting(1, runtime=True, help="torch threads after the organism's build (0: torch's default)")
    workers: int = setting(0, runtime=True, help="Ray workers for extraction, sampling and log-probs (0: here)")
    ray_address: str = setting("", runtime=True, help="Ray cluster to join (auto: the one `ray start` began)")
    out: str = setting("runs/demo", runtime=True, help="output directory")

    def __post_init__(self) -> None:
        check(self.threads >= 0, f"threads: must be ≥ 0 (0: torch's default), got {self.threads}")
        check_device(self.device)
        check_rater(self.rater)
        check_stage_options(self.stages, self.stage_options, self.skip)
        for section, names in WIRED.items():
            sub = getattr(self, section)
            defaults = type(sub)()
            for name in names:
                check(getattr(sub, name) == getattr(defaults, name),
                      f"{section}.{name}: set by the demo (give pre/post/dataset/seed/dtype/device/test_split "
                      f"at the demo's top level)")
        tp = self.train_probe
        check(self.compare.n >= 4, "compare.n: need at least 4 prompts (the source probe splits them 3 ways)")
        check(any(parse_position(p).spec == "user_end" for p in tp.positions),
              "train_probe.positions: the sweep needs user_end (the search's objective and Q1's prompt-only probe)")
        check(any(parse_position(p).needs_completion or parse_position(p).spec.lstrip("-").isdigit()
                  for p in tp.positions),
              "train_probe.positions: the sweep needs a completion position for the comparison")

    def sweep_config(self, model: str, dataset: str, out: str, pre: str = "", rater: str | None = None
                     ) -> TrainProbeConfig:
        """The sweep the probes stage runs: the `train_probe` section with the demo's shared settings and the
        subjects (the pre-RL model for the DPO baseline, the rater of the user_end target)."""
        return dataclasses.replace(self.train_probe, model=model, dataset=dataset, test_split=self.test_split,
                                   dtype=self.dtype, device=self.device, seed=self.seed, sweep=True, out=out,
                                   pre=pre, revision=self.revision_post or None, rater=rater or "none", workers=self.workers,
                                   ray_address=self.ray_address)

    def compare_config(self, pre: str, post: str, dataset: str, probe: str, beta: float, rater: str | None,
                       out: str) -> CompareConfig:
        """The comparison the compare stage runs: the `compare` section with the subjects and the best probe."""
        return dataclasses.replace(self.compare, pre=pre, post=post, dataset=dataset, probe=probe,
                                   prompts=self.test_split, seed=self.seed, beta=beta,
                                   rater=rater or "none", dtype=self.dtype, revision_pre=self.revision_pre or None,
                                   revision_post=self.revision_post or None,
                                   device=self.device, out=out, workers=self.workers,
                                   ray_address=self.ray_address)

    def causal_config(self, pre: str, post: str, dataset: str, probe: str, beta: float, rater: str | None,
                      out: str) -> SteerConfig:
        """The causal stage's `rsearch steer`: the `causal` section with the subjects and the best probe."""
        return dataclasses.replace(self.causal, pre=pre, post=post, dataset=dataset, probe=probe,
                                   prompts=self.test_split, seed=self.seed, beta=beta, rater=rater or "none",
                                   dtype=self.dtype, device=self.device, out=out)
