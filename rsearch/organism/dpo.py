"""The post-RL model: Direct Preference Optimization (Rafailov et al., 2023) from the SFT model.

    loss = −log σ( β·[(log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))] )

Sequence log-probabilities sum over the response tokens and its `</s>`; the reference is the frozen SFT
model, whose log-probabilities are computed once before training. The build adds the chosen responses'
per-token NLL (weight `dpo_nll_weight`, as RPO does; 0 gives plain DPO): on the v2 demo, plain DPO raised the
true reward by style alone while its answers left the grammar (well-formed 0.73) and correctness did not move;
with the NLL term correctness rose (config.py has the figures).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from rsearch.lm import batched_values, span_logprobs
from rsearch.organism.sft import cosine_lr, pad_right


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss per pair.

    Args:
        policy_chosen_logps, policy_rejected_logps: [batch] log π(y|x) of the chosen / rejected responses.
        ref_chosen_logps, ref_rejected_logps: [batch] the same under the reference model.
        beta: strength of the implicit KL penalty (zephyr: 0.1).

    Returns:
        losses [batch], chosen_rewards [batch], rejected_rewards [batch] — the implicit rewards
        β·(log π − log π_ref), detached.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [batch]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [batch]
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))  # [batch]
    return losses, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()


def response_logps(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]],
                   response_ids: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Summed log-probability of each response given its prompt: [batch]."""
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    ids, _ = pad_right(seqs, pad_id)  # [batch, len]
    logits = model(input_ids=ids).logits  # [batch, len, vocab]; right padding needs no mask (causal)
    spans = [(len(p), len(p) + len(r)) for p, r in zip(prompt_ids, response_ids)]
    return span_logprobs(logits, ids, spans)


@torch.no_grad()
def batched_logps(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]],
                  response_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """response_logps without gradients, in batches of similar lengths (less padding): [n]."""
    model.eval()
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(response_ids[i]))
    # its own batches and forward (shortest first, no attention mask), not lm.sequence_logprobs': they fix the
    # built organism's reference log-probs
    return batched_values([order[s:s + batch_size] for s in range(0, len(order), batch_size)], len(order),
                          lambda idx: response_logps(model, [prompt_ids[i] for i in idx],
                                                     [response_ids[i] for i in idx], pad_id))


def train_dpo(policy: PreTrainedModel, prompt_ids: list[list[int]], chosen_ids: list[list[int]],
              rejected_ids: list[list[int]], ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
              beta: float, epochs: int, batch_size: int, lr: float, seed: int, pad_id: int,
              nll_weight: float = 0.0, progress: bool = True) -> list[dict[str, float]]:
    """Trains `policy` in place on preference pairs; returns per-step loss and reward accuracy.

    nll_weight > 0 adds the chosen responses' per-token negative log-likelihood to the loss (RPO, Pang et
    al. 2024), which keeps a small policy from drifting into text the reference never wrote.
    """
    n = len(prompt_ids)
    g = torch.Generator().manual_seed(seed * 1000 + 2)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    total = math.ceil(n / batch_size) * epochs
    warmup = max(1, total // 10)
    log: list[dict[str, float]] = []
    policy.train()
    bar = tqdm(total=total, desc="dpo", disable=not progress, leave=False)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).tolist()
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, total, lr, warmup)
            # one forward over chosen and rejected together: [2·batch]
            both = response_logps(policy, [prompt_ids[i] for i in idx] * 2,
                                  [chosen_ids[i] for i in idx] + [rejected_ids[i] for i in idx], pad_id)
            pc, pr = both[: len(idx)], both[len(idx):]
            losses, rc, rr = dpo_loss(pc, pr, ref_chosen[idx], ref_rejected[idx], beta)
            loss = losses.mean()
            if nll_weight > 0:
                n_tok = torch.tensor([len(chosen_ids[i]) for i in idx], dtype=pc.dtype)
                loss = loss + nll_weight * (-pc / n_tok).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            log.append({"loss": loss.item(), "accuracy": (rc > rr).float().mean().item()})
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(r['loss'] for r in log[-10:]) / 10:.3f}")
    bar.close()
    policy.eval()
    return log
