"""Sampling: new tokens/s of the fast decode loop against the plain one (the old path) on the same model and seeds.

    python benchmarks/bench_sampling.py                                  # CPU, tiny Mistral-style model
    python benchmarks/bench_sampling.py --shape mistral-7b --device cuda --dtype bfloat16 --rows 256

Two workloads: `run-to-cap` (a random-init model rarely draws its end token: every row runs to max_new_tokens,
the rehearsal's worst case) and `early-stops` (a set of stop tokens drawn ~1% of the time, so rows finish at
different steps and the fast loop's finished rows leave the batch). Paths: `plain` (`sample_tokens`: growing KV
cache, every row to the end), `static` (`fast_sample_tokens`: static KV cache, finished rows leave, no host sync
in the draw) and, on CUDA, `compiled` (static with the decode step in CUDA graphs; timed after one warm-up; run-to-cap only).
Each path's tokens are checked against the plain path's. Ends with one JSON line of ratios.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, print_json_line, random_mistral, sync  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--rows", type=int, default=32, help="sequences decoded together")
    ap.add_argument("--prompt", type=int, default=140, help="mean prompt length (tokens; ±50%%)")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    model = random_mistral(args.shape, getattr(torch, args.dtype), args.device)
    vocab = SHAPES[args.shape]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.prompt // 2, args.prompt * 3 // 2 + 1, (args.rows,), generator=g)
    contexts = sorted((torch.randint(8, vocab, (int(n),), generator=g).tolist() for n in lengths), key=len)
    workloads = {"run-to-cap": [2], "early-stops": list(range(8, 8 + max(1, vocab // 100)))}
    paths = ["plain", "static"] + (["compiled"] if cuda else [])
    results: dict = {}
    for workload, stops in workloads.items():
        reference = None
        for path in paths:
            if path == "compiled" and workload != "run-to-cap":
                continue  # compaction makes a graph per batch size met: minutes of compiling at 7B
            tokens, seconds, err = run(model, contexts, args.new, stops, path, args.device)
            if err:
                results[f"{workload}/{path}"] = {"error": err}
                print(f"{workload:<12}{path:<10} failed: {err}")
                continue
            n = sum(len(t) for t, _ in tokens)
            reference = reference or tokens
            results[f"{workload}/{path}"] = {"tokens_per_s": n / seconds, "new_tokens": n, "seconds": seconds,
                                             "same_tokens_as_plain": tokens == reference}
            print(f"{workload:<12}{path:<10}{n / seconds:>12.1f} tokens/s  ({n} tokens, {seconds:.2f} s)"
                  f"  same tokens as plain: {tokens == reference}")
    ratios = {}
    for workload in workloads:
        base = results.get(f"{workload}/plain", {}).get("tokens_per_s")
        for path in paths[1:]:
            fast = results.get(f"{workload}/{path}", {}).get("tokens_per_s")
            if base and fast:
                ratios[f"{workload}_{path}_vs_plain"] = round(fast / base, 3)
                ratios[f"{workload}_{path}_same_tokens"] = results[f"{workload}/{path}"]["same_tokens_as_plain"]
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print_json_line({"bench": "sampling", "shape": args.shape, "device": args.device, "dtype": args.dtype,
                     "rows": args.rows, "new": args.new, "prompt": args.prompt, **ratios,
                     **{f"{k}_tokens_per_s".replace("/", "_"): round(v["tokens_per_s"], 1)
                        for k, v in results.items() if "tokens_per_s" in v}})


def run(model, contexts, new: int, stops: list[int], path: str, device: str):
    from rsearch.lm import fast_sample_tokens, sample_tokens

    def once():
        gen = torch.Generator(device).manual_seed(1)
        kw = dict(pad_id=3, generator=gen, stop_ids=stops)
        if path == "plain":
            return sample_tokens(model, contexts, new, **kw)
        return fast_sample_tokens(model, contexts, new, compile=path == "compiled", **kw)

    try:
        if path == "compiled":
            once()  # compiles: one graph per batch size met
        sync(device)
        t0 = time.perf_counter()
        tokens = once()
        sync(device)
        return tokens, time.perf_counter() - t0, None
    except Exception as e:  # a failing path is reported, not fatal
        return None, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


if __name__ == "__main__":
    main()
