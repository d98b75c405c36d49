"""Helpers shared by the benchmark scripts: model shapes, timing, and the closing JSON line."""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import torch

SHAPES = {
    # a CPU-sized Mistral-style model (tests and this machine)
    "small": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                  intermediate_size=768, vocab_size=8000),
    # the real subject's shape: mistral-7b-sft-beta / zephyr-7b-beta
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=32000),
}


def random_mistral(shape: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A random-init Mistral-architecture model of a named shape (no download)."""
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(seed)
    cfg = MistralConfig(max_position_embeddings=4096, **SHAPES[shape])
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
