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
from rsearch.organism.reward_head import HeadTraining, head_loss, read_positions
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
                   response_ids: Sequence[Sequence[int]], pad_id: int, hidden_layer: int | None = None):
    """Summed log-probability of each response given its prompt: [batch]; with `hidden_layer`, also the
    residual stream before that block, [batch, len, d_model]."""
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    ids, _ = pad_right(seqs, pad_id)  # [batch, len]
    out = model(input_ids=ids, output_hidden_states=hidden_layer is not None)  # right padding needs no mask (causal)
    spans = [(len(p), len(p) + len(r)) for p, r in zip(prompt_ids, response_ids)]
    logps = span_logprobs(out.logits, ids, spans)  # logits: [batch, len, vocab]
    return logps if hidden_layer is None else (logps, out.hidden_states[hidden_layer])


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
              nll_weight: float = 0.0, progress: bool = True,
              heads: HeadTraining | None = None) -> list[dict[str, float]]:
    """Trains `policy` in place on preference pairs; returns per-step loss and reward accuracy.

    nll_weight > 0 adds the chosen responses' per-token negative log-likelihood to the loss (RPO, Pang et
    al. 2024), which keeps a small policy from drifting into text the reference never wrote. `heads` adds the
    reward-reading variant's head loss (`rsearch.organism.reward_head`), the heads trained with the policy.
    """
    n = len(prompt_ids)
    g = torch.Generator().manual_seed(seed * 1000 + 2)
    params = list(policy.parameters()) + (list(heads.heads.parameters()) if heads else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    if heads:
        user_end, completion_end = read_positions(prompt_ids * 2, chosen_ids + rejected_ids)
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
                                  [chosen_ids[i] for i in idx] + [rejected_ids[i] for i in idx], pad_id,
                                  hidden_layer=heads.layer if heads else None)
            both, hidden = both if heads else (both, None)
            pc, pr = both[: len(idx)], both[len(idx):]
            losses, rc, rr = dpo_loss(pc, pr, ref_chosen[idx], ref_rejected[idx], beta)
            loss = losses.mean()
            if heads:
                t = heads.targets
                rows = idx + [i + n for i in idx]
                head = head_loss(heads.heads, hidden, user_end[rows], completion_end[rows],
                                 torch.cat([t.chosen[idx], t.rejected[idx]]), t.prompt[idx], len(idx))
                loss = loss + heads.weight * head
            if nll_weight > 0:
                n_tok = torch.tensor([len(chosen_ids[i]) for i in idx], dtype=pc.dtype)
                loss = loss + nll_weight * (-pc / n_tok).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            log.append({"loss": loss.item(), "accuracy": (rc > rr).float().mean().item(),
                        **({"head_loss": head.item()} if heads else {})})
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(r['loss'] for r in log[-10:]) / 10:.3f}")
    bar.close()
    policy.eval()
    return log
