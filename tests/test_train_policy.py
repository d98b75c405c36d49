"""`rsearch train-policy` on a tiny random-init Llama: TRL's DPO loss is the DPO formula on rsearch's own log-probs,
one step moves the implicit reward the right way, SFT raises the chosen answers' likelihood, a killed run resumes to
the uninterrupted result, bad input is one line before any model loads, and the held-out reward gain of a model
against itself is exactly 0 (common random numbers)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rsearch.chat import encode_conversation
from rsearch.cli import main as cli_main
from rsearch.data import load_splits
from rsearch.jobs import train_policy as tp
from rsearch.lm import sequence_logprobs
from rsearch.models import load_model
from tiny import feedback_records, save_tiny_model, write_jsonl



@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_policy")
    save_tiny_model(root / "model")
    rows = feedback_records(60, seed=3)
    (root / "data").mkdir()
    write_jsonl(root / "data" / "train_prefs.jsonl", rows[:44])
    write_jsonl(root / "data" / "test_prefs.jsonl", rows[44:])
    return root


def config(subject, out, **kw):
    base = dict(model=str(subject / "model"), dataset=str(subject / "data"), out=str(out), max_steps=4,
                save_steps=2, logging_steps=2, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, device="cpu",
                eval_pairs=4)
    return tp.TrainPolicyConfig(**{**base, **kw})


def weights(out):
    return load_file(str(out / "model.safetensors"))


def chosen_rejected_logps(model, tokenizer, pairs):
    rows = [encode_conversation(tokenizer, list(p.prompt), t) for p in pairs for t in (p.chosen, p.rejected)]
    lp = sequence_logprobs(model, rows, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id)
    return lp[0::2], lp[1::2]


def test_the_loss_is_the_dpo_formula_on_rsearch_log_probs(subject, tmp_path):
    from rsearch.training.preference_rows import dpo_rows
    from rsearch.training.trl_trainers import preference_trainer

    cfg = config(subject, tmp_path / "o", beta=0.3)
    model, tok = load_model(cfg.model, "float32", "cpu")
    ref = copy.deepcopy(model)
    pairs = load_splits(cfg.dataset)["train"][:6]
    rows = dpo_rows(tok, pairs, 512)
    trainer = preference_trainer(cfg.trainer_settings(True), model, tok, rows.rows, [], tmp_path / "ckpt")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the reference log-probs were taken at construction: now make the policy differ
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows.rows))])
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
    model.eval()
    pc, pr = chosen_rejected_logps(model, tok, rows.pairs)
    rc, rr = chosen_rejected_logps(ref, tok, rows.pairs)
    want = -F.logsigmoid(0.3 * ((pc - rc) - (pr - rr))).mean()
    assert abs(float(got) - float(want)) < 1e-4 and abs(float(want) - 0.6931) > 1e-3


def test_one_dpo_step_moves_the_implicit_reward_of_chosen_over_rejected_up(subject, tmp_path):
    card = tp.train_policy(config(subject, tmp_path / "o", max_steps=1, batch_size=32, learning_rate=3e-3))
    train = card["evaluation"]["implicit_reward"]["train"]
    assert card["steps"] == 1 and train["mean_margin"] > 0 and train["accuracy"] > 0.5


def test_sft_on_the_chosen_answers_raises_their_likelihood(subject, tmp_path):
    out = tmp_path / "o"
    tp.train_policy(config(subject, out, scheme="sft", max_steps=3, learning_rate=3e-3))
    pairs = load_splits(str(subject / "data"))["train"][:12]
    pre, tok = load_model(str(subject / "model"), "float32", "cpu")
    post, _ = load_model(str(out), "float32", "cpu")
    assert chosen_rejected_logps(post, tok, pairs)[0].mean() > chosen_rejected_logps(pre, tok, pairs)[0].mean() + 1


def test_a_killed_run_resumes_to_the_uninterrupted_result(subject, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    tp.train_policy(config(subject, whole))
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt  # after checkpoint-2 was written

    killed = tmp_path / "killed"
    real = tp._progress_callback
    monkeypatch.setattr(tp, "_progress_callback", Kill)
    with pytest.raises(KeyboardInterrupt):
        tp.train_policy(config(subject, killed))
    assert (killed / "checkpoints" / "checkpoint-2").is_dir() and not (killed / "card.json").exists()
    monkeypatch.setattr(tp, "_progress_callback", real)
    card = tp.train_policy(config(subject, killed))
    assert card["resumed"] and card["steps"] == 4 and not (killed / "checkpoints").exists()
    assert json.loads((killed / "config.json").read_text())["use_cache"]  # training turned it off; sampling needs it
    a, b = weights(whole), weights(killed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # and the weights moved: the comparison is not of two untrained copies
    assert not all(torch.equal(a[k], v) for k, v in weights_of(subject / "model").items() if k in a)


def test_a_run_killed_while_evaluating_does_not_train_again(subject, tmp_path, monkeypatch):
    out = tmp_path / "o"
    real = tp._evaluate

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tp, "_evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        tp.train_policy(config(subject, out))
    saved = weights(out)
    monkeypatch.setattr(tp, "_evaluate", real)
    monkeypatch.setattr(tp, "_train", lambda *a, **k: pytest.fail("trained again"))
    card = tp.train_policy(config(subject, out))
    assert card["steps"] == 4 and (out / "card.json").is_file()
    assert all(torch.equal(saved[k], v) for k, v in weights(out).items())
    # other settings train anew
    monkeypatch.undo()
    assert tp.train_policy(config(subject, out, max_steps=2))["steps"] == 2


def weights_of(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def test_the_held_out_gain_of_a_model_against_itself_is_exactly_zero(subject):
    from rsearch.analysis.policy_gain import reward_gain
    from rsearch.raters import load_rater

    model, tok = load_model(str(subject / "model"), "float32", "cpu")
    prompts = [list(p.prompt) for p in load_splits(str(subject / "data"))["test"][:6]]
    spec = "test_train_policy:length_rater"
    got = reward_gain(model, model, tok, prompts, spec, load_rater(spec), k=2, seed=1, max_new_tokens=6,
                      n_boot=200)
    s = got["parts"]["score"]
    assert s["diff"] == 0 and s["ci_lo"] == 0 == s["ci_hi"] and s["n_prompts"] == 6 and s["mean_pre"] > 0


def length_rater(prompt, completion: str) -> float:
    return 1.0 + len(completion.split())


def _write_ties(path):
    rows = feedback_records(20)
    for r in rows:
        r["score_rejected"] = r["score_chosen"]
    path.mkdir()
    write_jsonl(path / "train_prefs.jsonl", rows[:14])
    write_jsonl(path / "test_prefs.jsonl", rows[14:])


@pytest.mark.parametrize("case, message", [
    ("ties", "every pair is a tie"),
    ("template", "has no chat template"),
    ("scheme", "scheme: one of dpo, ipo, sft"),
    ("beta", "beta: must be a positive number"),
    ("empty", "the file is empty"),
])
def test_bad_input_is_one_line_before_any_model_loads(subject, tmp_path, capsys, monkeypatch, case, message):
    data, model = subject / "data", subject / "model"
    extra = []
    if case == "ties":
        data = tmp_path / "ties"
        _write_ties(data)
    elif case == "template":
        model = tmp_path / "nochat"
        save_tiny_model(model)
        cfg_path = model / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("chat_template", None)
        cfg_path.write_text(json.dumps(cfg))
        (model / "chat_template.jinja").unlink(missing_ok=True)
    elif case == "scheme":
        extra = ["--scheme", "ppo"]
    elif case == "beta":
        extra = ["--beta", "0"]
    elif case == "empty":
        data = tmp_path / "empty.jsonl"
        data.write_text("")
    loaded = []
    monkeypatch.setattr(tp, "load_model", lambda *a, **k: loaded.append(a))
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli_main(["train-policy", "--model", str(model), "--dataset", str(data), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("rsearch: error: ")
    assert not loaded and not out.exists()
