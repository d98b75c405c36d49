"""The positive control's reward heads: the reward-reading organism computes its reward where a probe can read it.

A "No" from the study means something only if the pipeline says "Yes" on a model that is known to carry the reward.
The `reward-reading` variant makes one: during DPO, two linear heads on the residual stream before block L (the
probes' `blocks.L.hook_resid_pre`) regress

- at `completion_end` (the completion's last token before `</s>`): the completion's true reward;
- at `user_end` (the generation prompt's last token): the prompt's expected reward, the mean true reward of the SFT
  model's sampled answers to it,

both standardized, their mean squared error × `reward_head_weight` added to the DPO loss, as PPO's value head shares
the policy's trunk. The gradient flows into the trunk, so the post-RL model must write both rewards linearly at
layer L; the heads themselves are not part of the saved model (`reward_head.safetensors` keeps them beside it).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RewardHeads(nn.Module):
    """Two linear heads on d_model: `completion` (true reward) and `prompt` (expected reward)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.completion = nn.Linear(d_model, 1)
        self.prompt = nn.Linear(d_model, 1)


@dataclass(frozen=True)
class HeadTargets:
    """Per preference pair, the heads' standardized targets, and the scale they were standardized by.

    chosen, rejected: [m] true reward of each completion; prompt: [m] the prompt's expected reward.
    """

    chosen: Tensor
    rejected: Tensor
    prompt: Tensor
    scale: dict[str, float]


@dataclass(frozen=True)
class HeadTraining:
    """What train_dpo needs to train the heads with the policy: the heads, the layer whose resid_pre they read
    (hidden_states[layer]), the weight of their loss, and their targets on the training pairs."""

    heads: RewardHeads
    layer: int
    weight: float
    targets: HeadTargets


def expected_rewards(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """prompt_id → mean true reward of its sampled completions (the build's completion rows)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["prompt_id"], []).append(float(r["true_score"]))
    return {k: statistics.fmean(v) for k, v in by.items()}


def head_targets(prefs: Sequence[dict[str, Any]], expected: dict[str, float],
                 scale: dict[str, float] | None = None) -> HeadTargets:
    """Targets of preference rows, standardized by `scale` (default: these rows' own mean and SD)."""
    c = torch.tensor([float(p["true_score_chosen"]) for p in prefs])
    r = torch.tensor([float(p["true_score_rejected"]) for p in prefs])
    e = torch.tensor([expected[p["prompt_id"]] for p in prefs])
    if scale is None:
        both = torch.cat([c, r])
        scale = {"reward_mean": float(both.mean()), "reward_sd": float(both.std()) or 1.0,
                 "expected_mean": float(e.mean()), "expected_sd": float(e.std()) or 1.0}
    z = lambda x, k: (x - scale[f"{k}_mean"]) / scale[f"{k}_sd"]  # noqa: E731
    return HeadTargets(z(c, "reward"), z(r, "reward"), z(e, "expected"), scale)


def read_positions(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]
                   ) -> tuple[Tensor, Tensor]:
    """[n] user_end and completion_end indices of prompt + response sequences (a response ends with `</s>`)."""
    user_end = torch.tensor([len(p) - 1 for p in prompt_ids])
    completion_end = torch.tensor([len(p) + max(len(r) - 2, 0) for p, r in zip(prompt_ids, response_ids)])
    return user_end, completion_end


def read_heads(heads: RewardHeads, hidden: Tensor, user_end: Tensor, completion_end: Tensor, n_prompts: int
               ) -> tuple[Tensor, Tensor]:
    """Both heads' readings on one batch: ([2b] completion head at each row's completion_end, [b] prompt head at
    user_end).

    Args:
        hidden: [2b, T, d] the residual stream at the heads' layer, chosen rows then rejected rows.
        user_end, completion_end: [2b] where each row's heads read.
        n_prompts: b (a prompt's user_end is the same in its chosen and rejected row: read once).
    """
    rows = torch.arange(hidden.shape[0])
    at_end = hidden[rows, completion_end]  # [2b, d]
    at_user = hidden[rows[:n_prompts], user_end[:n_prompts]]  # [b, d]
    return heads.completion(at_end).squeeze(-1), heads.prompt(at_user).squeeze(-1)


def head_loss(heads: RewardHeads, hidden: Tensor, user_end: Tensor, completion_end: Tensor,
              completion_target: Tensor, prompt_target: Tensor, n_prompts: int) -> Tensor:
    """MSE of both heads on one batch (see `read_heads`): completion_target [2b] the rows' standardized true
    rewards, prompt_target [b] the prompts'."""
    completion, prompt = read_heads(heads, hidden, user_end, completion_end, n_prompts)
    return F.mse_loss(completion, completion_target) + F.mse_loss(prompt, prompt_target)
