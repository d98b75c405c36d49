"""Ray: prefixes searched per second with 1 and with 2 workers (and in-process, without Ray).

    python benchmarks/bench_ray.py [--prefixes 12] [--budget 96] [--organism-size tiny]

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

PREFIXES = ["hey ,", "hi !", "what is", "can you", "please ,", "give me", "name", "list", "compute",
            "repeat after me :", "say something", "thanks ,"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism-size", default="tiny")
    p.add_argument("--model", help="HF model dir (default: the organism's post-RL model)")
    p.add_argument("--prefixes", type=int, default=12)
    p.add_argument("--budget", type=int, default=96)
    p.add_argument("--strategy", default="beam")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker and in-process (0: cpu_count / workers)")
    args = p.parse_args()

    import ray

    from rsearch.probes import make_probe, save_probe
    from rsearch.distributed import RayPool, SearchSpec, run_many
    from rsearch.searcher import Budget

    if args.model is None:
        from rsearch.organism import ensure

        args.model = str(ensure(args.organism_size, seed=0).post_dir)
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

    rows = {}
    torch.set_num_threads(args.threads or cpus)
    t0 = time.perf_counter()
    run_many(spec(0), prefixes, workers=0)
    rows["in-process (no Ray)"] = (0.0, time.perf_counter() - t0)
    ray.init(num_cpus=max(2, cpus), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        for workers in (1, 2):
            t0 = time.perf_counter()
            pool = RayPool(spec(workers), workers)
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_many(pool.spec, prefixes, pool=pool)
            rows[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = (startup, time.perf_counter() - t0)
            pool.shutdown()
    finally:
        ray.shutdown()

    print(f"{len(prefixes)} prefixes × {args.budget} evaluations ({args.strategy}); {cpus} CPUs; "
          f"{args.threads or 'cpu_count / workers'} torch threads per worker")
    print(f"{'run':<24}{'start-up s':>11}{'search s':>10}{'prefixes/s':>12}")
    for name, (startup, secs) in rows.items():
        print(f"{name:<24}{startup:11.1f}{secs:10.2f}{len(prefixes) / secs:12.3f}")
    one, two = rows["ray, 1 worker"][1], rows["ray, 2 workers"][1]
    print(json.dumps({"prefixes_per_s_1_worker": round(len(prefixes) / one, 3),
                      "prefixes_per_s_2_workers": round(len(prefixes) / two, 3),
                      "speedup_2_vs_1": round(one / two, 3),
                      "ray_1_vs_in_process": round(rows["in-process (no Ray)"][1] / one, 3), "cpus": cpus,
                      "threads_per_worker": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
