"""Random-init tiny configs of real architectures and a small word-level tokenizer with a zephyr template."""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import (AutoModelForCausalLM, Gemma2Config, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig,
                          Olmo2Config, Phi3Config, PreTrainedTokenizerFast, Qwen2Config)

ZEPHYR_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "\n"]
WORDS = ("what is two plus three please list some animals the answer is five cat dog bird "
         "thank you hello world repeat after me good bad nice reply".split())

# gemma2 scales its input embeddings by sqrt(d_model) inside the embedding module; phi3 fuses qkv and gate/up;
# olmo2 normalizes after attention and MLP (and q/k)
ARCHS = ("gpt2", "llama", "mistral", "qwen2", "gpt_neox", "gemma2", "phi3", "olmo2")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIALS + WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                 pre_tokenizers.WhitespaceSplit()])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"])
    fast.chat_template = ZEPHYR_TEMPLATE
    return fast


BPE_CORPUS = ("Explain what is the moon? Please explain. What is two plus three? The answer is five. "
              "List some animals: cat, dog, bird. Repeat after me: hello world. Thank you, that was nice. "
              "Tell me a story about the sea and the stars.").split(". ")


def tiny_bpe_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style: a word's leading space is part of its token) trained on a few
    sentences, with the zephyr template: spacing between joined pieces of text matters to it."""
    from tokenizers import trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS[:-1], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(BPE_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"])
    fast.chat_template = ZEPHYR_TEMPLATE
    return fast


def tiny_model(arch: str, vocab_size: int = 64, n_layers: int = 3, d_model: int = 32, seed: int = 0):
    common = dict(vocab_size=vocab_size)
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=4, n_positions=128, **common)
    elif arch == "llama":
        cfg = LlamaConfig(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, **common)
    elif arch == "mistral":
        cfg = MistralConfig(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, **common)
    elif arch == "qwen2":
        cfg = Qwen2Config(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, **common)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=128, **common)
    elif arch == "gemma2":
        cfg = Gemma2Config(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=d_model // 4, query_pre_attn_scalar=d_model // 4,
                           intermediate_size=64, max_position_embeddings=128, sliding_window=16, **common)
    elif arch == "phi3":
        cfg = Phi3Config(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=None, eos_token_id=2, **common)
    elif arch == "olmo2":
        cfg = Olmo2Config(hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                          pad_token_id=0, bos_token_id=None, eos_token_id=2, **common)
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def feedback_records(n: int, seed: int = 0) -> list[dict]:
    """Rows in the ultrafeedback_binarized schema whose rating rises with the words 'good' and 'nice'."""
    import random

    rng = random.Random(seed)
    prompts = ["what is two plus three", "list some animals", "repeat after me hello", "hello world"]
    filler = "the answer is five cat dog bird thank you".split()
    rows = []
    for i in range(n):
        prompt = f"{rng.choice(prompts)} {'please' if rng.random() < 0.5 else ''}".strip()
        replies = []
        for _ in range(2):
            k = rng.randint(0, 3)
            words = rng.choices(filler, k=rng.randint(2, 6)) + ["good", "nice"][: k % 3] + ["bad"] * (k == 0)
            rng.shuffle(words)
            replies.append((" ".join(words), 3.0 + 2.0 * (k % 3) - 2.0 * (k == 0) + rng.gauss(0, 0.3)))
        (c, sc), (r, sr) = sorted(replies, key=lambda t: -t[1])
        user = {"role": "user", "content": prompt}
        rows.append({"prompt": prompt, "prompt_id": f"p{i}",
                     "chosen": [user, {"role": "assistant", "content": c}],
                     "rejected": [user, {"role": "assistant", "content": r}],
                     "messages": [user, {"role": "assistant", "content": c}],
                     "score_chosen": sc, "score_rejected": sr})
    return rows


def write_jsonl(path, rows) -> None:
    import json

    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def save_tiny_model(directory, arch: str = "llama", n_layers: int = 3, d_model: int = 32):
    """A random-init tiny model and the tiny tokenizer saved as an HF directory."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, vocab_size=len(tok), n_layers=n_layers, d_model=d_model)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def save_perturbed_copy(src, dst, seed: int, scale: float = 0.05) -> torch.Generator:
    """Saves the model at `src` with seeded Gaussian noise added to every weight (a stand-in post-RL model);
    returns the generator, for callers that draw more from the same stream."""
    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    model.save_pretrained(dst)
    tiny_tokenizer().save_pretrained(dst)
    return gen
