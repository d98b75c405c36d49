"""configs/smollm2.yaml: the real subject's recipe (feedback → train-policy → demo), run through the same code path on
a tiny random-init Llama with SmolLM2's chat template (a default system message, ChatML markers) and a byte-level
BPE tokenizer, with the tasks rater: every stage runs on the pre/post pair it makes, with the truth known."""
from __future__ import annotations

import json
from pathlib import Path

from rsearch.config import load_yaml
from rsearch.jobs.demo import run_demo
from rsearch.jobs.demo_config import DemoConfig
from rsearch.jobs.feedback import FeedbackConfig, build_feedback
from rsearch.jobs.train_policy import TrainPolicyConfig, train_policy

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "rsearch" / "configs" / "smollm2.yaml"
SMOLLM2_TEMPLATE = (  # SmolLM2-135M-Instruct's own (as its GGUF file ships it)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ("What is 23 plus 41? The answer is 64. Can you list these words in reverse order: lamp, book, moon? "
          "Which word is third? How many times is 'key' mentioned? Hi! Calculate 26 + 5. Thanks! "
          "Quick question: what is the word after 'book' in this list: book, apple, clock, horse?").split(". ")


def smollm2_like(directory: Path) -> Path:
    """A random-init 3-layer Llama with a byte-level BPE tokenizer and SmolLM2's template, as an HF folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tiny import tiny_model

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                            show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = SMOLLM2_TEMPLATE
    model = tiny_model("llama", vocab_size=len(fast), n_layers=3)
    model.config.eos_token_id = fast.eos_token_id
    model.config.max_position_embeddings = 8192  # SmolLM2's context: the system message alone is 31 tokens here
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def test_the_recipe_feedback_train_policy_demo_on_a_smollm2_like_model(tmp_path):
    raw = load_yaml(RECIPE)
    model = str(smollm2_like(tmp_path / "smollm2"))
    feedback = FeedbackConfig.from_dict({**raw["feedback"], "model": model, "n": 48, "k": 3, "max_new_tokens": 8,
                                         "out": str(tmp_path / "feedback"), "device": "cpu"}, where="feedback")
    summary = build_feedback(feedback)
    assert summary["rater"] == "tasks" and summary["pairs"]["train_prefs"] >= 10
    policy = TrainPolicyConfig.from_dict({**raw["train_policy"], "model": model, "dataset": feedback.out,
                                          "max_steps": 2, "batch_size": 4, "eval_pairs": 4, "eval_prompts": 4,
                                          "eval_k": 1, "max_new_tokens": 8, "out": str(tmp_path / "post"),
                                          "device": "cpu"}, where="train_policy")
    assert policy.scheme == "dpo" and policy.lora_r > 0 and policy.rater == "tasks"
    card = train_policy(policy)
    assert set(card["evaluation"]["true_reward"]["parts"]) == {"score", "correct", "style"}
    recipe = DemoConfig.from_yaml(RECIPE, section="demo")
    assert recipe.post == raw["train_policy"]["out"] and recipe.dataset == raw["feedback"]["out"]
    assert "compare" not in recipe.skip  # the pair is real: every stage runs
    cfg = recipe.replace(
        pre=model, post=policy.out, dataset=feedback.out, device="cpu", out=str(tmp_path / "demo"),
        train_probe={"layers": [1], "max_train": 40, "max_test": 20, "expected_reward_k": 2,
                     "expected_reward_max_train": 10, "max_new_tokens": 6},
        compare={"n": 6, "k": 2, "max_new_tokens": 6, "sample_batch_size": 12, "n_boot": 100},
        direction={"n_random": 50},
        search={"strategies": ["random", "beam"], "budget": 4, "prefixes": list(recipe.search.prefixes[:1]),
                "random_prompts": 2, "check_samples": 1, "max_new_tokens": 6},
        causal={"n": 2, "k": 1, "max_new_tokens": 6, "n_random": 1, "fit_pairs": 20, "norm_rows": 8,
                "n_boot": 100})
    report = run_demo(cfg)
    ids = {a["id"] for a in report["answers"]}
    assert {"Q1", "Q2", "Q3", "Q4", "Q5", "Q6"} <= ids
    compare = json.loads((Path(cfg.out) / "compare" / "compare.json").read_text())
    assert compare["rater"] == "tasks" and "true_reward" in compare["metrics"]
