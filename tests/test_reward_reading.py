"""The positive-control organism (`--variant reward-reading`): its DPO trains linear reward heads on the residual
stream at a known layer, and on held-out pairs those heads really read the reward there."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rsearch.cli import main
from rsearch.errors import RsearchError
from rsearch.organism import OrganismConfig, default_dir, ensure
from rsearch.organism.reward_head import RewardHeads, head_loss, head_targets, read_positions


def test_the_heads_read_where_the_probes_read():
    # prompt of 3 tokens, responses [a, b, </s>] and [c, </s>]: user_end is the prompt's last token,
    # completion_end the response's last token before </s>
    user_end, completion_end = read_positions([[1, 2, 3], [1, 2, 3]], [[7, 8, 2], [9, 2]])
    assert user_end.tolist() == [2, 2] and completion_end.tolist() == [4, 3]
    heads = RewardHeads(4)
    hidden = torch.randn(2, 6, 4, requires_grad=True)
    loss = head_loss(heads, hidden, user_end, completion_end, torch.zeros(2), torch.zeros(1), 1)
    loss.backward()
    touched = (hidden.grad.abs().sum(-1) > 0).nonzero().tolist()
    assert touched == [[0, 2], [0, 4], [1, 3]]  # the gradient reaches the trunk only where the heads read


def test_targets_are_standardized_on_the_training_rows():
    prefs = [{"prompt_id": "a", "true_score_chosen": 6.0, "true_score_rejected": 2.0},
             {"prompt_id": "b", "true_score_chosen": 4.0, "true_score_rejected": 4.0}]
    t = head_targets(prefs, {"a": 5.0, "b": 1.0})
    both = torch.cat([t.chosen, t.rejected])
    assert float(both.mean()) == pytest.approx(0.0) and float(both.std()) == pytest.approx(1.0)
    held_out = head_targets(prefs[:1], {"a": 5.0}, t.scale)  # the test rows keep the training scale
    assert float(held_out.chosen[0]) == pytest.approx(float(t.chosen[0]))


def test_the_variant_is_its_own_build_and_a_bad_one_is_one_line(capsys):
    assert default_dir("tiny", 0, "reward-reading").name == "tiny-reward-reading-seed0"
    assert default_dir("tiny", 0).name == "tiny-seed0"
    assert OrganismConfig.preset("demo", 0, "reward-reading").head_layer == 4
    with pytest.raises(RsearchError, match="reward_head_layer"):
        OrganismConfig(n_layers=3, reward_head_layer=3)
    assert main(["organism", "build", "--size", "tiny", "--variant", "critic"]) == 2
    assert "variant" in capsys.readouterr().err


def test_the_tiny_reward_reading_organism_carries_the_reward_at_its_head_layer(_rsearch_home):
    org = ensure("tiny", seed=0, variant="reward-reading", progress=False)
    assert org.card["variant"] == "reward-reading"
    head = org.card["checks"]["reward_head"]
    assert head["layer"] == 2 and head["n_test_pairs"] > 50
    # held-out pairs, never trained on: the prompt head reads the expected reward well, the completion head the
    # true reward better than nothing (the 3-layer tiny model cannot compute correctness, 5 of the 10 points)
    assert head["test_r_prompt"] > 0.4 and head["test_r_completion"] > 0.15
    weights = load_file(str(org.root / "reward_head.safetensors"))
    assert set(weights) == {"completion.weight", "completion.bias", "prompt.weight", "prompt.bias"}
    assert weights["completion.weight"].shape == (1, org.card["sizes"]["d_model"])
