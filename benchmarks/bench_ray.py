"""Ray: prefixes searched, rows extracted and tokens sampled per second with 1 and with 2 workers (and in-process).

    python benchmarks/bench_ray.py [--prefixes 12] [--budget 96] [--organism-size tiny] [--parts search,extraction,sampling]

Extraction and sampling run through `rsearch.distributed.ShardPool` (the path of `--workers` in train-probe and
compare): the same batches as in-process, sharded over the workers and merged in order; the results are checked
to be identical to the in-process ones.

Each worker is an actor that loaded the model and probe once; start-up is timed apart from the searches.
The probe is a random linear direction at `user_end` of the organism's post-RL model (throughput does not
depend on what the probe learned). Each worker (and the in-process run) uses `--threads` torch threads (1 by
default: on a small shared CPU machine more threads per process mostly add contention), so the 2-worker
figure shows what process-level parallelism adds. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

PREFIXES = ["hey ,", "hi !", "what is", "can you", "please ,", "give me", "name", "list", "compute",
            "repeat after me :", "say something", "thanks ,"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism-size", default="tiny")
    p.add_argument("--model", help="HF model dir (default: the organism's post-RL model)")
    p.add_argument("--shape", choices=["organism", "small"], default="organism",
                   help="small: a random-init model of benchmarks/common.py's `small` shape with the organism's "
                        "tokenizer, so that the work per row outweighs Ray's per-task cost as it does at 7B")
    p.add_argument("--dataset", help="feedback data for extraction and sampling (default: the organism's)")
    p.add_argument("--prefixes", type=int, default=12)
    p.add_argument("--budget", type=int, default=96)
    p.add_argument("--strategy", default="beam")
    p.add_argument("--parts", default="search,extraction,sampling")
    p.add_argument("--rows", type=int, default=1200, help="conversations extracted")
    p.add_argument("--prompts", type=int, default=96, help="prompts sampled (×4 completions, 48 new tokens)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker and in-process (0: cpu_count / workers)")
    args = p.parse_args()

    import ray

    from rsearch.probes import make_probe, save_probe
    from rsearch.distributed import RayPool, SearchSpec, run_many
    from rsearch.searcher import Budget

    if args.model is None:
        from rsearch.organism import ensure

        org = ensure(args.organism_size, seed=0)
        args.model, args.dataset = str(org.post_dir), args.dataset or str(org.data_dir)
        if args.shape == "small":
            args.model = small_model(args.model)
    from transformers import AutoConfig

    d = AutoConfig.from_pretrained(args.model).hidden_size
    probe = make_probe("linear", d)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(d, generator=torch.Generator().manual_seed(0)))
    probe_path = Path(tempfile.mkdtemp(prefix="bench_ray_")) / "probe.safetensors"
    save_probe(probe_path, probe, {"model": args.model, "hook": "blocks.1.hook_resid_pre", "position": "user_end"})
    prefixes = [PREFIXES[i % len(PREFIXES)] + (f" {i // len(PREFIXES)}" if i >= len(PREFIXES) else "")
                for i in range(args.prefixes)]
    cpus = os.cpu_count() or 1

    def spec(workers: int) -> SearchSpec:
        return SearchSpec(probe=str(probe_path), strategy=args.strategy, budget=Budget(evaluations=args.budget),
                          seed=0, device="cpu", threads=args.threads or max(1, cpus // max(1, workers)))

    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads or cpus)
    ray.init(num_cpus=max(2, cpus), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                       "OMP_NUM_THREADS": str(args.threads or 1)}})
    summary: dict = {"cpus": cpus, "threads_per_worker": args.threads}
    try:
        if "search" in parts:
            summary.update(bench_search(args, spec, prefixes, run_many, RayPool))
        if parts & {"extraction", "sampling"}:
            summary.update(bench_rows(args, parts))
    finally:
        ray.shutdown()
    print(json.dumps(summary))
    return 0


def small_model(organism_dir: str) -> str:
    """A random-init `small`-shape Mistral saved beside the organism's tokenizer; returns its directory."""
    from transformers import AutoTokenizer

    from common import random_mistral

    tok = AutoTokenizer.from_pretrained(organism_dir)
    out = Path(tempfile.mkdtemp(prefix="bench_ray_small_"))
    model = random_mistral("small", torch.float32, "cpu", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def bench_search(args, spec, prefixes, run_many, RayPool) -> dict:
    rows = {}
    t0 = time.perf_counter()
    run_many(spec(0), prefixes, workers=0)
    rows["in-process (no Ray)"] = (0.0, time.perf_counter() - t0)
    for workers in (1, 2):
        t0 = time.perf_counter()
        pool = RayPool(spec(workers), workers)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_many(pool.spec, prefixes, pool=pool)
        rows[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = (startup, time.perf_counter() - t0)
        pool.shutdown()
    print(f"search: {len(prefixes)} prefixes × {args.budget} evaluations ({args.strategy})")
    print(f"{'run':<24}{'start-up s':>11}{'search s':>10}{'prefixes/s':>12}")
    for name, (startup, secs) in rows.items():
        print(f"{name:<24}{startup:11.1f}{secs:10.2f}{len(prefixes) / secs:12.3f}")
    one, two = rows["ray, 1 worker"][1], rows["ray, 2 workers"][1]
    return {"prefixes_per_s_1_worker": round(len(prefixes) / one, 3),
            "prefixes_per_s_2_workers": round(len(prefixes) / two, 3), "speedup_2_vs_1": round(one / two, 3),
            "ray_1_vs_in_process": round(rows["in-process (no Ray)"][1] / one, 3)}


def bench_rows(args, parts: set) -> dict:
    """Extraction (build_store) and sampling (sample_completions) in-process and on 1 and 2 shard workers."""
    import numpy as np

    from rsearch.activations import build_store
    from rsearch.data import load_splits
    from rsearch.distributed import ShardPool, sharded_capture, sharded_sampler
    from rsearch.jobs.train_probe import encode_pairs
    from rsearch.lm import sample_completions
    from rsearch.models import load_model

    model, tok = load_model(args.model, device="cpu")
    pairs = load_splits(args.dataset, "train_prefs", "test_prefs", 0.1, seed=0)["train"]
    pairs = [pairs[i % len(pairs)] for i in range(max(args.rows // 2, args.prompts))]  # cycled past the data's end
    rows, _ = encode_pairs(tok, pairs[: args.rows // 2], 4096)
    prompts = [list(p.prompt) for p in pairs[: args.prompts]]
    hooks = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    positions = ["user_end", "-1", "completion_mean"]
    tokens = sum(len(r) for r in rows)
    store_root = Path(tempfile.mkdtemp(prefix="bench_ray_store_"))
    runs: dict[str, dict] = {}

    def extract(name: str, capture=None):
        t0 = time.perf_counter()
        store = build_store(model, rows, hooks, positions, root=store_root / name, model_key="bench", pad_id=tok.pad_token_id,
                            batch_size=32, progress=False, capture_batches=capture)
        seconds = time.perf_counter() - t0
        return seconds, {k: np.asarray(store.array(*k)) for k in store.keys}

    def sample(map_batches=None):
        t0 = time.perf_counter()
        got = sample_completions(model, tok, prompts, 4, seed=0, max_new_tokens=48, batch_size=32, min_new_tokens=0,
                                 map_batches=map_batches)
        return time.perf_counter() - t0, got

    local = {}
    if "extraction" in parts:
        local["extraction"] = extract("local")
        runs.setdefault("in-process", {})["extraction"] = local["extraction"][0]
    if "sampling" in parts:
        local["sampling"] = sample()
        runs.setdefault("in-process", {})["sampling"] = local["sampling"][0]
    same = True
    for workers in (1, 2):
        t0 = time.perf_counter()
        with ShardPool(workers, dtype="float32", device="cpu", threads=args.threads or 1) as pool:
            name = f"ray, {workers} worker{'s' if workers > 1 else ''}"
            runs[name] = {"start-up": time.perf_counter() - t0}
            if "extraction" in parts:
                seconds, arrays = extract(f"w{workers}", sharded_capture(pool, args.model, None, rows, hooks, positions,
                                                                         tok.pad_token_id))
                same &= all(np.array_equal(arrays[k], local["extraction"][1][k]) for k in arrays)
                runs[name]["extraction"] = seconds
            if "sampling" in parts:
                seconds, got = sample(sharded_sampler(pool, args.model))
                same &= got == local["sampling"][1]
                runs[name]["sampling"] = seconds
    n_new = sum(c.n_tokens for cs in local["sampling"][1] for c in cs) if "sampling" in parts else 0
    print(f"extraction: {len(rows)} rows ({tokens} tokens); sampling: {len(prompts)} prompts × 4 ({n_new} new tokens)")
    print(f"{'run':<24}{'start-up s':>11}{'extract tok/s':>15}{'sample tok/s':>14}")
    for name, r in runs.items():
        ext = f"{tokens / r['extraction']:15.0f}" if "extraction" in r else f"{'-':>15}"
        smp = f"{n_new / r['sampling']:14.0f}" if "sampling" in r else f"{'-':>14}"
        print(f"{name:<24}{r.get('start-up', 0.0):11.1f}{ext}{smp}")
    out = {"sharded_identical_to_in_process": bool(same)}
    for part in ("extraction", "sampling"):
        if part in parts:
            one, two = runs["ray, 1 worker"][part], runs["ray, 2 workers"][part]
            out[f"{part}_speedup_2_vs_1"] = round(one / two, 3)
            out[f"{part}_ray_1_vs_in_process"] = round(runs["in-process"][part] / one, 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
