"""Activation capture throughput and peak memory: rsearch's early-exit capture vs peers on the same batches.

Peers: a plain HF forward with output_hidden_states=True (the usual script), and TransformerLens
run_with_cache with a names_filter for the same hook (TransformerLens 4's TransformerBridge around the very
same HF model, where transformer_lens installs; run last, since the bridge switches attention to eager).
For a hook at layer L of N, early exit should approach N/(L+1) against the full forward.

    python benchmarks/bench_capture.py                       # CPU, small Mistral-style model
    python benchmarks/bench_capture.py --shape mistral-7b --device cuda --dtype bfloat16 --layer 24
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, median_seconds, print_json_line, random_mistral  # noqa: E402

from rsearch.hooks import capture, run_forward  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_bytes(fn, device: str) -> int:
    """Peak memory the call adds above what was in use before it (CUDA: the allocator; CPU: sampled RSS)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    t = threading.Thread(target=sample)
    t.start()
    fn()
    done.set()
    t.join()
    return max(0, max(peak[0], _rss()) - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--layer", type=int, default=None, help="hook layer (default: 3/4 of the depth)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dtype = getattr(torch, args.dtype)
    n_layers = SHAPES[args.shape]["num_hidden_layers"]
    layer = args.layer if args.layer is not None else (3 * n_layers) // 4
    hook = f"blocks.{layer}.hook_resid_pre"

    model = random_mistral(args.shape, dtype, args.device)
    vocab = SHAPES[args.shape]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        ids = torch.randint(3, vocab, (args.batch, args.seq), generator=g)
        mask = torch.ones_like(ids)
        mask[: args.batch // 2, : args.seq // 4] = 0  # mixed lengths, left padded
        batches.append({"input_ids": ids.to(args.device), "attention_mask": mask.to(args.device),
                        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0).to(args.device)})
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    @torch.no_grad()
    def ours():
        out = []
        for b in batches:
            with capture(model, [hook]) as acts:
                run_forward(model, **b)
            out.append(acts[hook][:, -1].float().cpu())
        return out

    @torch.no_grad()
    def hf_hidden_states():
        out = []
        for b in batches:
            hs = model(**b, output_hidden_states=True, use_cache=False).hidden_states
            out.append(hs[layer][:, -1].float().cpu())
        return out

    a, b = ours(), hf_hidden_states()
    max_err = max(float((x - y).abs().max()) for x, y in zip(a, b))
    results = {}
    for name, fn in (("rsearch_capture", ours), ("hf_output_hidden_states", hf_hidden_states)):
        s = median_seconds(fn, args.device, args.repeats)
        results[name] = {"seconds": s, "tokens_per_s": tokens / s, "peak_bytes": peak_bytes(fn, args.device)}

    if not args.no_tl:
        try:
            results.update(bench_tl(model, layer, batches, tokens, args.device, args.repeats))
        except Exception as e:  # a peer's failure is reported, not fatal
            print(f"TransformerLens failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")

    print(f"model {args.shape} ({n_layers} layers), hook {hook}, {args.batches}×[{args.batch}, {args.seq}] tokens, "
          f"{args.device} {args.dtype}; max |ours − hidden_states[{layer}]| = {max_err:.2e}")
    print(f"{'method':<34}{'tokens/s':>12}{'peak MiB':>11}")
    for name, r in results.items():
        print(f"{name:<34}{r['tokens_per_s']:>12.0f}{r['peak_bytes'] / 2**20:>11.1f}")
    base = results["rsearch_capture"]
    ratios = {"speedup_vs_hf_hidden_states": base["tokens_per_s"] / results["hf_output_hidden_states"]["tokens_per_s"],
              "expected_early_exit_bound": n_layers / (layer + 1),
              "peak_memory_hf_over_ours": results["hf_output_hidden_states"]["peak_bytes"] / max(1, base["peak_bytes"]),
              "max_abs_err": max_err}
    for name in ("tl_run_with_cache", "tl_run_with_cache_stop_at_layer"):
        if name in results:
            ratios[f"speedup_vs_{name}"] = base["tokens_per_s"] / results[name]["tokens_per_s"]
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print_json_line({"bench": "capture", "shape": args.shape, "device": args.device, "dtype": args.dtype,
                     "layer": layer, **ratios})


def bench_tl(model, layer, batches, tokens, device, repeats) -> dict:
    """TransformerLens 4's TransformerBridge wrapped around the same HF model (same weights)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except Exception as e:  # not installed, or incompatible with this transformers
        print(f"TransformerLens unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return {}
    from tiny_tokenizer import tokenizer_for

    with tempfile.TemporaryDirectory() as d:
        model.config.save_pretrained(d)
        bridge = TransformerBridge.boot_transformers(d, hf_model=model, tokenizer=tokenizer_for(model), device=device)
    hook = f"blocks.{layer}.hook_resid_pre"

    def run(stop: bool):
        @torch.no_grad()
        def fn():
            out = []
            for b in batches:
                kw = {"stop_at_layer": layer + 1} if stop else {}
                _, cache = bridge.run_with_cache(b["input_ids"], attention_mask=b["attention_mask"],
                                                 names_filter=lambda n: n == hook, **kw)
                out.append(cache[hook][:, -1].float().cpu())
            return out
        return fn

    out = {}
    for name, stop in (("tl_run_with_cache", False), ("tl_run_with_cache_stop_at_layer", True)):
        fn = run(stop)
        sec = median_seconds(fn, device, repeats)
        out[name] = {"seconds": sec, "tokens_per_s": tokens / sec, "peak_bytes": peak_bytes(fn, device)}
    return out


if __name__ == "__main__":
    main()
