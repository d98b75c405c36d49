"""The embedded default model organism: a small SFT model, its DPO successor and rated feedback data from a
synthetic chat world whose rater is known, so every claim rsearch makes can be checked against the truth.

    from rsearch.organism import ensure, true_score
    org = ensure("tiny", seed=0)            # builds once (cached under $RSEARCH_HOME/organism/tiny-seed0)
    AutoModelForCausalLM.from_pretrained(org.pre_dir)   # pre-RL (SFT); org.post_dir is post-RL (DPO)
    datasets.load_dataset("json", data_files=str(org.test_prefs))   # ultrafeedback_binarized schema
    true_score(prompt, response)            # the noiseless rater, on any text
    rate_detail(prompt, response)           # its parts: recognised, correct, style_points, well_formed, …

See world.py for the five tasks (their answers are right only relative to the prompt's operands or words),
the item split and which prompt features move the expected reward; rater.py for the reward function;
build.py for the directory layout and checks.py for the card's checks.
"""
from __future__ import annotations

from pathlib import Path

from rsearch.organism.build import Organism, build_or_load
from rsearch.organism.config import SIZES, VARIANTS, OrganismConfig
from rsearch.paths import rsearch_home
from rsearch.organism.rater import noisy_score, rate_detail, task_of, true_score, well_formed

__all__ = ["Organism", "OrganismConfig", "SIZES", "VARIANTS", "build_or_load", "default_dir", "ensure", "noisy_score",
           "rate_detail", "task_of", "true_score", "well_formed"]


def default_dir(size: str = "demo", seed: int = 0, variant: str = "standard") -> Path:
    """Where `ensure` caches an organism: $RSEARCH_HOME/organism/{size}-seed{seed} ({size}-{variant}-seed{seed}
    for a variant)."""
    name = f"{size}-seed{seed}" if variant == "standard" else f"{size}-{variant}-seed{seed}"
    return rsearch_home() / "organism" / name


def ensure(size: str = "demo", seed: int = 0, out: str | Path | None = None, progress: bool = True,
           force: bool = False, variant: str = "standard") -> Organism:
    """The organism of this size and seed: built if missing, else returned from the cache at once.

    Args:
        size: "tiny" (tests; ≤ 45 s to build) or "demo" (the README's study; ≤ 5 min).
        seed: same seed → same artifacts.
        out: build here instead of `default_dir(size, seed)`; an organism there built with other settings
            raises RsearchError unless force.
        progress: print stages and progress bars to stderr.
        force: rebuild even if a matching organism exists.
        variant: "standard", or "reward-reading" (the positive control; see OrganismConfig).
    """
    cfg = OrganismConfig.preset(size, seed, variant)
    root = Path(out) if out is not None else default_dir(size, seed, variant)
    return build_or_load(cfg, root, force=force, progress=progress, rebuild_stale=out is None)
