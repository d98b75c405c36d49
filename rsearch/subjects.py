"""The subjects of a study: pre- and post-RL models, the feedback dataset, the rater and DPO β.

Left empty, each is the embedded organism's (built once, then cached). A pair of model directories of one
organism build (their parent holds its card) is recognised as the organism, so its rater and β apply.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsearch.log import show_progress
from rsearch.raters import check_spec

DEFAULT_BETA = 0.1  # zephyr's DPO β


@dataclass(frozen=True)
class Subjects:
    pre: str
    post: str
    dataset: str
    rater: str | None          # a rater spec (rsearch.raters): "organism", a reward model path, module:callable; None
    beta: float
    beta_source: str
    organism: bool             # pre and post are one organism build's models
    organism_size: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_subjects(*, pre: str = "", post: str = "", dataset: str = "", rater: str = "auto",
                     beta: float | None = None, organism_size: str = "demo", seed: int = 0,
                     need_pre: bool = True, need_dataset: bool = True, organism_variant: str = "standard"
                     ) -> Subjects:
    """Subjects as given, the organism's where left empty.

    Args:
        rater: auto (the organism's rater when the models are the organism's), organism, none, a local reward
            model directory, module.path:callable or judge:MODEL (see rsearch.raters).
        beta: DPO β of the implicit reward; None takes the organism's card's, else `DEFAULT_BETA`.
        need_pre / need_dataset: whether a missing pre-RL model / dataset should be filled in (building the
            organism if needed); train-probe reads only the post-RL model and a dataset.
    """
    check_spec(rater)
    org = None
    if (need_pre and not pre) or not post or (need_dataset and not dataset):
        from rsearch.organism import ensure  # lazy: rsearch.organism loads transformers

        org = ensure(organism_size, seed=seed, progress=show_progress(), variant=organism_variant)
    pre = pre or (str(org.pre_dir) if need_pre else "")
    post = post or str(org.post_dir)
    dataset = dataset or (str(org.data_dir) if org is not None else "")
    root = organism_root(post)
    card = None
    if root is not None and (not pre or organism_root(pre) == root):
        from rsearch.organism import Organism  # lazy: rsearch.organism loads transformers

        card = Organism.at(root).card
    is_org = card is not None
    chosen_rater = {"auto": "organism" if is_org else None, "none": None}.get(rater, rater)
    beta_source = "config"
    if beta is None:
        found = organism_beta(card) if is_org else None
        beta, beta_source = (found, "organism card") if found else (DEFAULT_BETA, "default (zephyr's DPO beta)")
    size = (card.get("config") or {}).get("size") if is_org else None
    return Subjects(pre=pre, post=post, dataset=dataset, rater=chosen_rater, beta=float(beta), beta_source=beta_source,
                    organism=is_org, organism_size=size)


def organism_root(path: str) -> Path | None:
    """The organism build a model directory belongs to (its parent holds card.json), or None."""
    p = Path(path).expanduser()
    if p.is_dir() and (p.parent / "card.json").is_file() and (p / "config.json").is_file():
        return p.parent.resolve()
    return None


def organism_beta(card: dict | None) -> float | None:
    """DPO β from an organism's card (`config.dpo_beta`)."""
    value = ((card or {}).get("config") or {}).get("dpo_beta")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
