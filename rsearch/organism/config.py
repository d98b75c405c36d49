"""OrganismConfig: every setting of an organism build, with the `tiny` and `demo` presets."""
from __future__ import annotations

import dataclasses

from rsearch.config import Config, check, setting

SIZES = ("tiny", "demo")
VARIANTS = ("standard", "reward-reading")  # reward-reading: the positive control (a reward head shares the trunk)
BUILD_VERSION = 5  # bump when a change to the build makes old cached organisms stale


@dataclasses.dataclass(frozen=True)
class OrganismConfig(Config):
    """Settings of one organism build. Same config (and seed) → same artifacts."""

    size: str = "demo"
    seed: int = 0
    # model: Mistral-style decoder
    n_layers: int = 6
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 384
    max_len: int = 128
    # skills phase before SFT (world.skills_examples, sft.train_skills): plain prompts, the answer sentence alone and
    # always right, loss on the answer only — as pretraining teaches a model what SFT then teaches it to say. Without
    # it the v2 SFT model never learned the copy/lookup tasks (member, reverse, position at chance teacher-forced on
    # test items). Measured at demo size, seed 0, batch 64, teacher-forced right-vs-wrong on 60 plain test prompts
    # per task: lr 3e-3 → every copy task at chance after 800 steps; lr 1e-3 → position, reverse, count 1.00 by
    # 300-400 steps, v2's member 0.48-0.73 at 1000-1200 steps (at chance with weight 4, which also stalled reverse
    # and position), add 0.7-0.8 (held-out operand pairs: memorized sums generalize only in part). `after` replaced
    # member: 0.77 at 600 steps, 0.98 at 800, with the weights below.
    skills_examples: int = 51200  # 800 steps of sft_batch (700 stopped `after` mid-way: pre-model 0.77 on the card)
    skills_lr: float = 1e-3
    skills_task_weights: tuple[float, ...] = (1.0, 2.0, 2.0, 0.5, 2.0)  # in world.TASKS order
    # SFT on responses of mixed quality (loss on every token of the conversation). Demo cards, seed 0, after the 800
    # skills steps: 400 steps at lr 1e-3 → well-formed pre 0.90 / post 0.93 (word salad in the style phrases), all
    # other targets met; 500 steps at 2e-3 → well-formed 0.96 / 0.95, post-model minimal pairs 0.975, right-answer
    # share +0.32 (the pre model's reverse falls to 0.59 teacher-forced, DPO brings it back to 1.00).
    sft_examples: int = 32000  # 500 steps (v2: 60000 at lr 5e-3, no skills phase)
    sft_epochs: int = 1
    sft_batch: int = 64
    sft_lr: float = 2e-3
    # loss weight of a prompt token relative to a response token (sft.py). Tried as the lever to make the SFT model
    # copy/look up prompt words (tiny size, 20k examples, seed 0, right-answer share on 60 held-out prompts per task,
    # sampled): 1.0 → add 0.02, member 0.40, reverse 0.00, count 0.45, position 0.02; 0.1 → 0.02/0.45/0.00/0.50/0.02;
    # 0.0 with 4 KV heads → 0.02/0.48/0.00/0.53/0.02; 0.1 at batch 16 (1250 steps), lr 1e-3/2e-3/5e-3 → position
    # ≤ 0.03, reverse 0.00. None learns copying (a teacher-forced "the first word is" puts 0.26 on the list's words,
    # what uniform over the 16 list words gives), so the default stays 1.0 and the artifacts are unchanged.
    sft_prompt_weight: float = 1.0
    sft_micro_batches: int = 2  # length-sorted micro-batches per batch: same gradient, less padding
    # feedback data: completions sampled from the SFT model, rated with noise
    n_train_prompts: int = 3000
    n_test_prompts: int = 400
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    noise_sigma: float = 1.0
    minimal_share: float = 0.3  # share of prompts whose pair is a minimal pair (identical but for the answer)
    sample_batch: int = 1024
    # DPO from the SFT model on train_prefs
    dpo_beta: float = 0.1
    dpo_epochs: int = 2
    dpo_batch: int = 32
    dpo_lr: float = 5e-4
    # + NLL of chosen (RPO); 0 = plain DPO. Measured on the v2 demo, seed 0, same SFT model and pairs: plain DPO
    # raised the true reward +0.72 all by style (+1.56) while correctness fell (−0.04) and well-formed answers
    # dropped to 0.73; with 1.0, +0.66 of which +0.41 correctness, well-formed 0.98. So 1.0 is the default.
    dpo_nll_weight: float = 1.0
    # card
    bootstrap: int = 2000
    # the positive control: during DPO, linear heads on the residual stream before block `reward_head_layer`
    # (None: two thirds of the way up) regress the completion's true reward at completion_end and the prompt's
    # expected reward at user_end, their loss × `reward_head_weight` added to DPO's, so the post-RL model computes
    # both there. At the middle layer with weight 1 (demo) the heads read held-out rewards at r 0.47 / 0.63 but
    # ranked the test pairs no better than the bag of words (0.607 vs 0.605) and the minimal pairs below chance
    # (0.467): the trunk carried the reward's style, not its correctness. Hence later and stronger.
    variant: str = "standard"
    reward_head_layer: int | None = None
    reward_head_weight: float = 5.0

    def __post_init__(self) -> None:
        check(self.size in SIZES or self.size.startswith("custom"),
              f"size: expected one of {', '.join(SIZES)}, got {self.size!r}")
        check(self.seed >= 0, f"seed: expected a non-negative integer, got {self.seed}")
        check(self.n_layers >= 1, "n_layers: must be at least 1")
        check(self.d_model % self.n_heads == 0, "d_model: must be divisible by n_heads")
        check(self.n_heads % self.n_kv_heads == 0, "n_kv_heads: must divide n_heads")
        check(self.sft_examples >= 1, "sft_examples: must be at least 1")
        check(self.skills_examples >= 0, "skills_examples: must be ≥ 0")
        check(len(self.skills_task_weights) == 5 and min(self.skills_task_weights) >= 0
              and sum(self.skills_task_weights) > 0,
              "skills_task_weights: expected 5 non-negative weights (add, after, reverse, count, position)")
        check(self.sft_prompt_weight >= 0, "sft_prompt_weight: must be ≥ 0")
        check(self.sft_micro_batches >= 1, "sft_micro_batches: must be ≥ 1")
        check(self.n_train_prompts >= 1 and self.n_test_prompts >= 1, "n_train_prompts/n_test_prompts: must be ≥ 1")
        check(self.samples_per_prompt >= 2, "samples_per_prompt: need at least 2 completions to form a pair")
        check(self.noise_sigma >= 0, "noise_sigma: must be ≥ 0")
        check(0 <= self.minimal_share <= 1, "minimal_share: must be in [0, 1]")
        check(self.dpo_beta > 0, "dpo_beta: must be > 0")
        check(self.dpo_epochs >= 0, "dpo_epochs: must be ≥ 0")
        check(self.dpo_nll_weight >= 0, "dpo_nll_weight: must be ≥ 0")
        check(self.variant in VARIANTS, f"variant: expected one of {', '.join(VARIANTS)}, got {self.variant!r}")
        check(self.reward_head_layer is None or 0 < self.reward_head_layer < self.n_layers,
              f"reward_head_layer: must be in 1..{self.n_layers - 1}, got {self.reward_head_layer}")
        check(self.reward_head_weight > 0, "reward_head_weight: must be > 0")

    @property
    def head_layer(self) -> int:
        """The layer whose resid_pre the reward-reading variant's heads read."""
        return self.reward_head_layer if self.reward_head_layer is not None else max(1, 2 * self.n_layers // 3)

    @classmethod
    def tiny(cls, seed: int = 0) -> "OrganismConfig":
        """Tests' organism: builds in well under 45 s on 2 cores.

        No skills phase: this 3-layer d64 model did not learn the copy tasks in a budget that fits (position alone
        needed 1500 steps at lr 3e-3), and 100 skills steps at 3e-3 left its card no better (seed 0, 1 thread:
        reward gain +0.19 [−0.01, +0.39], DPO implicit 0.585, against +0.30 [+0.12, +0.51] and 0.641 without).
        """
        return cls(size="tiny", seed=seed, n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, d_ff=192,
                   skills_examples=0, sft_examples=20000, sft_lr=5e-3, n_train_prompts=600,
                   n_test_prompts=150, samples_per_prompt=4, dpo_epochs=6, bootstrap=500)

    @classmethod
    def demo(cls, seed: int = 0) -> "OrganismConfig":
        """The README's organism: builds in at most 5 minutes on 2 cores."""
        return cls(size="demo", seed=seed)

    @classmethod
    def preset(cls, size: str, seed: int = 0, variant: str = "standard") -> "OrganismConfig":
        check(size in SIZES, f"size: expected one of {', '.join(SIZES)}, got {size!r}")
        cfg = getattr(cls, size)(seed)
        return cfg if variant == "standard" else dataclasses.replace(cfg, variant=variant)


@dataclasses.dataclass(frozen=True)
class OrganismBuildConfig(Config):
    """The `rsearch organism build` job: which preset to build and where."""

    size: str = setting("demo", choices=SIZES, help="tiny (tests, ≤ 45 s) or demo (≤ 5 min)")
    seed: int = setting(0, help="random seed; same seed → same artifacts")
    variant: str = setting("standard", choices=VARIANTS, help="standard, or reward-reading: the positive control, "
                           "whose DPO also trains linear reward heads on the residual stream (layer 2/3 of the way up)")
    out: str = setting("", runtime=True, help="directory to build into (default $RSEARCH_HOME/organism/SIZE-seedSEED)")
    force: bool = setting(False, runtime=True, help="rebuild even if a matching organism exists")

    def __post_init__(self) -> None:
        check(self.size in SIZES, f"size: expected one of {', '.join(SIZES)}, got {self.size!r}")
        check(self.seed >= 0, f"--seed: expected a non-negative integer, got {self.seed}")
