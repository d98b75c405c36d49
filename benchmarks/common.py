"""Helpers shared by the benchmark scripts: model shapes, timing, and the closing JSON line."""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import torch

SHAPES = {
    # the smallest Mistral-style model with the stand-in tokenizer's vocabulary (sampling and study on a CPU)
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, vocab_size=8000),
    # a CPU-sized Mistral-style model (tests and this machine)
    "small": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=768, vocab_size=8000),
    # the real subject's shape: mistral-7b-sft-beta / zephyr-7b-beta
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=32000),
}


def random_mistral(shape: str, dtype: torch.dtype, device: str, seed: int = 0, **overrides):
    """A random-init Mistral-architecture model of a named shape (no download); `overrides` go to its config."""
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(seed)
    cfg = MistralConfig(max_position_embeddings=4096, **{**SHAPES[shape], **overrides})
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_json_line(obj: dict) -> None:
    print(json.dumps(obj, sort_keys=True))


# ----- stand-in subjects: random-init models of a named shape with a zephyr-style word-level tokenizer -----

ZEPHYR_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "\n"]  # ids 0-7


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer `w8 … w{vocab_size-1}` plus zephyr's role markers, `</s>` and its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                 pre_tokenizers.WhitespaceSplit()])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"])
    fast.chat_template = ZEPHYR_TEMPLATE
    return fast


def feedback_rows(n: int, vocab_size: int, prompt_words: int, completion_words: int, seed: int = 0,
                  prefix: str = "p") -> list[dict]:
    """Rows in the ultrafeedback_binarized schema: random words, ratings 1–10 (random: the stand-in has nothing to
    learn; the timing does not depend on it). Completions run ±50% around their mean; a quarter of the prompts are
    short (8–30 words, like UltraFeedback's one-line questions, which the Optuna template is mined from) and the
    rest ±50% around a length that keeps the prompts' mean at `prompt_words`."""
    import random

    rng = random.Random(seed)
    long_mean = max(1, round((prompt_words - 0.25 * 19) / 0.75))

    def words(mean: int) -> str:
        return " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(rng.randint(mean // 2, mean * 3 // 2)))

    rows = []
    for i in range(n):
        prompt = words(19) if rng.random() < 0.25 else words(long_mean)
        user = {"role": "user", "content": prompt}
        replies = sorted(((words(completion_words), rng.uniform(1, 10)) for _ in range(2)), key=lambda t: -t[1])
        (c, sc), (r, sr) = replies
        rows.append({"prompt": prompt, "prompt_id": f"{prefix}{i}",
                     "chosen": [user, {"role": "assistant", "content": c}],
                     "rejected": [user, {"role": "assistant", "content": r}],
                     "messages": [user, {"role": "assistant", "content": c}],
                     "score_chosen": round(sc, 2), "score_rejected": round(sr, 2)})
    return rows
