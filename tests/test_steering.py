"""Steering: the hook adds exactly the vector where it should and is always removed; α = 0 gives the unsteered
samples; every direction is pushed at the same norm; `rsearch steer` runs end to end on the tiny organism."""
import json

import pytest
import torch

from rsearch.activations import collate
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.hooks import capture, decoder_layers, run_forward
from rsearch.lm import sample_completions
from rsearch.steering import (plain_decoding, random_directions, steer, steering_vector, typical_norm,
                              typical_spread, unit)
from tiny import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
PROMPTS = ["what is two plus three please", "hello", "list some animals"]


def _hook_count(model) -> int:
    return sum(len(layer._forward_pre_hooks) + len(layer._forward_hooks) for layer in decoder_layers(model))


def _prompt_batch():
    rows = [encode_conversation(TOK, p, None) for p in PROMPTS]
    return collate(rows, TOK.pad_token_id, "left")


@pytest.mark.parametrize("kind", ["resid_pre", "resid_post"])
def test_adds_the_vector_at_user_end_and_after_only(kind):
    model = tiny_model("mistral", vocab_size=len(TOK))
    hook = f"blocks.1.hook_{kind}"
    batch = _prompt_batch()
    vector = torch.randn(32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with capture(model, [hook]) as plain:
            run_forward(model, **batch.model_inputs("cpu"))
        for mode in ("user_end", "completion"):
            with steer(model, hook, vector, positions_from=mode), capture(model, [hook]) as steered:
                run_forward(model, **batch.model_inputs("cpu"))
            diff = steered[hook] - plain[hook]                        # [batch, seq, d]
            if mode == "user_end":  # only the left-padded prompt's last column: every row's user_end
                torch.testing.assert_close(diff[:, -1], vector.expand(len(PROMPTS), -1), atol=1e-5, rtol=0)
                assert diff[:, :-1].abs().max() == 0
            else:                   # the prompt holds no completion token
                assert diff.abs().max() == 0
    assert _hook_count(model) == 0


def test_decode_steps_are_steered_and_change_the_samples():
    model = tiny_model("mistral", vocab_size=len(TOK))
    plain = sample_completions(model, TOK, PROMPTS, 2, seed=5, max_new_tokens=6, **plain_decoding())
    vector = steering_vector(torch.randn(32), 40.0, 1.0)  # a push far larger than the stream
    for mode in ("user_end", "completion"):
        with steer(model, "blocks.0.hook_resid_post", vector, positions_from=mode):
            pushed = sample_completions(model, TOK, PROMPTS, 2, seed=5, max_new_tokens=6, **plain_decoding())
        assert [[c.text for c in p] for p in pushed] != [[c.text for c in p] for p in plain]


def test_alpha_zero_gives_exactly_the_unsteered_samples(tiny_organism):
    from rsearch.models import load_model

    model, tok = load_model(str(tiny_organism.post_dir), "float32", "cpu")
    prompts = ["what is 3 plus 5 ?", "please , what is 2 plus 2 ?", "hey , what is 7 plus 1 ?"]
    plain = sample_completions(model, tok, prompts, 3, seed=11, max_new_tokens=16, **plain_decoding())
    d = model.config.hidden_size
    for mode in ("user_end", "completion"):
        with steer(model, "blocks.1.hook_resid_pre", steering_vector(torch.randn(d), 0.0, 5.0), positions_from=mode):
            zero = sample_completions(model, tok, prompts, 3, seed=11, max_new_tokens=16, **plain_decoding())
        assert zero == plain
    assert _hook_count(model) == 0


def test_hook_is_removed_on_exception():
    model = tiny_model("llama", vocab_size=len(TOK))
    with pytest.raises(ValueError, match="boom"):
        with steer(model, "blocks.2.hook_resid_pre", torch.ones(32)):
            assert _hook_count(model) == 1
            raise ValueError("boom")
    assert _hook_count(model) == 0
    with pytest.raises(RsearchError, match="d_model"):
        with steer(model, "blocks.2.hook_resid_pre", torch.ones(31)):
            pass
    with pytest.raises(RsearchError, match="does not exist"):
        with steer(model, "blocks.9.hook_resid_pre", torch.ones(32)):
            pass
    assert _hook_count(model) == 0


def test_null_directions_are_pushed_at_matched_norms():
    model = tiny_model("mistral", vocab_size=len(TOK))
    batch = _prompt_batch()
    probe_dir = torch.randn(32, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 5, 32)
    nulls = random_directions(32, 4, seed=1)
    assert torch.allclose(nulls.norm(dim=1), torch.ones(4), atol=1e-6)
    assert not torch.allclose(nulls[0], nulls[1])
    rows = [encode_conversation(TOK, p, c) for p, c in (("hello", "nice reply"), ("list some animals", "cat dog"))]
    scale = typical_norm(model, rows, "blocks.1.hook_resid_pre", pad_id=TOK.pad_token_id)
    assert scale > 0
    hook = "blocks.1.hook_resid_pre"
    with torch.no_grad(), capture(model, [hook]) as plain:
        run_forward(model, **batch.model_inputs("cpu"))
    for alpha in (-0.5, 1.0):
        added = []
        for direction in [probe_dir, *nulls]:
            vector = steering_vector(direction, alpha, scale)
            with torch.no_grad(), steer(model, hook, vector), capture(model, [hook]) as steered:
                run_forward(model, **batch.model_inputs("cpu"))
            pushed = steered[hook][:, -1] - plain[hook][:, -1]        # [batch, d]
            added.append(pushed.norm(dim=-1))
            torch.testing.assert_close(pushed[0] / pushed[0].norm(), unit(direction) * (1 if alpha > 0 else -1),
                                       atol=1e-4, rtol=0)
        norms = torch.stack(added)                                    # [directions, batch]
        torch.testing.assert_close(norms, torch.full_like(norms, abs(alpha) * scale), atol=1e-4, rtol=1e-5)


def test_typical_norm_is_the_mean_token_norm_from_user_end_on():
    model = tiny_model("mistral", vocab_size=len(TOK))
    rows = [encode_conversation(TOK, p, c) for p, c in (("hello", "nice reply"), ("list some animals", "cat dog"))]
    hook = "blocks.2.hook_resid_pre"
    expected = []
    for r in rows:
        with torch.no_grad(), capture(model, [hook]) as acts:
            run_forward(model, input_ids=torch.tensor([r.ids]))
        expected += acts[hook][0, r.user_end:].norm(dim=-1).tolist()
    got = typical_norm(model, rows, hook, pad_id=TOK.pad_token_id, batch_size=2)
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_typical_spread_is_the_sd_along_the_direction_from_user_end_on():
    model = tiny_model("mistral", vocab_size=len(TOK))
    rows = [encode_conversation(TOK, p, c) for p, c in (("hello", "nice reply"), ("list some animals", "cat dog"))]
    hook = "blocks.2.hook_resid_pre"
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    along = []
    for r in rows:
        with torch.no_grad(), capture(model, [hook]) as acts:
            run_forward(model, input_ids=torch.tensor([r.ids]))
        along += (acts[hook][0, r.user_end:] @ unit(direction)).tolist()
    got = typical_spread(model, rows, hook, 5 * direction, pad_id=TOK.pad_token_id, batch_size=2)
    assert got == pytest.approx(float(torch.tensor(along).double().std()), rel=1e-5)
    assert got < typical_norm(model, rows, hook, pad_id=TOK.pad_token_id)  # the gentler unit


def test_steer_cli_end_to_end(tiny_organism, tmp_path, capsys):
    from rsearch.cli import main

    probes = tmp_path / "probes"
    assert main(["train-probe", "--organism-size", "tiny", "--hook", "1.resid_pre", "--position", "-1",
                 "--max-train", "200", "--max-test", "40", "--out", str(probes)]) == 0
    out = tmp_path / "steer"
    argv = ["steer", "--organism-size", "tiny", "--probe", str(probes / "best_probe.safetensors"), "-n", "4", "-k",
            "2", "--alphas=-1,0,1", "--alpha-unit", "norm", "--n-random", "2", "--fit-pairs", "60", "--norm-rows", "16",
            "--max-new-tokens", "12", "--patch-pairs", "6", "--patch-positions", "user_end,-1", "--n-boot", "200",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "true_reward" in printed and "patching" in printed
    result = json.loads((out / "steer.json").read_text())
    table = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    # the unsteered run plus (probe, shuffled, 2 random) × 2 non-zero α, each 4 prompts × 2 completions
    assert len(table) == (1 + 4 * 2) * 4 * 2
    assert {r["direction"] for r in table} == {"none", "probe", "shuffled", "random"}
    curves = result["metrics"]["post"]["true_reward"]["curves"]
    assert set(curves) == {"probe", "shuffled", "random"} and [p["alpha"] for p in curves["probe"]] == [-1, 0, 1]
    assert curves["probe"][1] == curves["random"][1]  # α = 0 is the one unsteered run
    slopes = result["metrics"]["post"]["true_reward"]["slopes"]
    assert {"probe_minus_random", "probe_minus_shuffled"} <= set(slopes)
    assert "correct" in result["metrics"]["post"] and "fluency" in result["metrics"]["post"]
    assert result["hook"] == "blocks.1.hook_resid_pre" and result["scale"]["post"] > 0
    n_layers = json.loads((tiny_organism.post_dir / "config.json").read_text())["num_hidden_layers"]
    assert {r["layer"] for r in result["patching"]["rows"]} == set(range(n_layers))
    assert result["patching"]["n_pairs"] == 6
    assert (out / "steering.png").is_file() and (out / "patching.png").is_file()
    assert result["alpha_unit"] == "norm"
    # a user_end probe reads the prompt, the same in every condition: its score is left out, and α's default unit
    # is the spread along the probe direction
    assert main(["train-probe", "--organism-size", "tiny", "--hook", "1.resid_pre", "--position", "user_end",
                 "--max-train", "100", "--max-test", "20", "--expected-reward-k", "2", "--out", str(probes / "ue")]) == 0
    spread = tmp_path / "spread"
    ue_argv = ["steer", "--organism-size", "tiny", "--probe", str(probes / "ue" / "best_probe.safetensors"), "-n",
               "2", "-k", "1", "--alphas=0,2", "--n-random", "1", "--fit-pairs", "40", "--norm-rows", "8",
               "--max-new-tokens", "6", "--patch-pairs", "0", "--n-boot", "100", "--out", str(spread)]
    assert main(ue_argv) == 0
    capsys.readouterr()
    got = json.loads((spread / "steer.json").read_text())
    assert got["alpha_unit"] == "spread" and 0 < got["scale"]["post"] < result["scale"]["post"]
    assert "probe_score" not in got["metrics"]["post"]
    assert main(argv[:-2] + ["--alphas", "1,2", "--out", str(out)]) == 2  # no α = 0: one line, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alphas" in err[0]
