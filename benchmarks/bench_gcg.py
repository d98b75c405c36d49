"""GCG step throughput — candidates scored per second — rsearch's `gcg` against nanoGCG 0.3.0.

Same model, same search width, top-k and suffix length, same initial suffix; both steps include the token
gradient. nanoGCG minimizes the cross-entropy of a target answer (a forward through every layer and the LM head
per candidate). rsearch maximizes a probe's score plus λ × the span's mean log-prob (its default objective: a
forward to the LM head per candidate) or, with λ = 0, the probe's score alone (each candidate's forward stops at
the probe's hook); it is timed with the probe at a middle layer and at the last layer's output. rsearch runs the
tokens every candidate shares (system message, template, prefix) once per step (`rsearch.prefix_cache`); a row
without that shows what it saves.

nanoGCG pins transformers ≤ 4.47, so it is not a dependency: install it aside, without its dependencies,

    pip install --no-deps --target /tmp/nanogcg_pkg nanogcg==0.3.0
    python benchmarks/bench_gcg.py --nanogcg-path /tmp/nanogcg_pkg

On transformers 5.x it runs with use_prefix_cache=False (its prefix-cache path passes a legacy tuple cache);
the script also tries use_prefix_cache=True and reports why it fails, if it does.

Prints a table and ends with one JSON line of ratios (rsearch ÷ nanoGCG candidates per second).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


SHAPES = {  # Mistral-style shapes: (layers, d_model, d_ff, heads, kv heads)
    "mistral-7b": (32, 4096, 14336, 32, 8),
    "mistral-1b": (16, 2048, 5632, 16, 8),
    "tiny": (4, 64, 128, 4, 2),  # for a smoke run on CPU
}


def random_model(shape: str, device: str, dtype: str):
    """A random-init Mistral-style model on the device, with the organism's word-level tokenizer."""
    from transformers import MistralConfig, MistralForCausalLM

    from rsearch.models import resolve_device, resolve_dtype
    from rsearch.organism.tokenizer import build_tokenizer
    from rsearch.organism.world import vocabulary

    tokenizer = build_tokenizer(vocabulary())
    layers, d, ff, heads, kv = SHAPES[shape]
    cfg = MistralConfig(vocab_size=len(tokenizer), hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(resolve_device(device)):
        model = MistralForCausalLM(cfg).to(resolve_dtype(dtype)).eval()
    model.requires_grad_(False)
    return model, tokenizer


def our_throughput(model, tokenizer, hook: str, args, share_prefix: bool = True, fluency: bool = True) -> dict:
    from rsearch.probes import make_probe
    from rsearch.scorer import ProbeScorer
    from rsearch.searcher import Searcher

    probe = make_probe("linear", model.config.hidden_size)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0)))
    scorer = ProbeScorer(probe, model, tokenizer, metadata={"hook": hook, "position": "-1"},
                         batch_size=args.batch_size or args.search_width)
    scorer.share_prefix = share_prefix
    options = {"n_tokens": args.n_tokens, "search_width": args.search_width, "topk": args.topk,
               "init": args.init}
    objective = None if fluency else {"logprob_weight": 0.0}
    Searcher(scorer, "gcg", 1 + args.search_width, options=options, objective=objective).optimize(args.prompt)
    budget = 1 + args.steps * args.search_width  # after a warm-up step, above
    t0 = time.perf_counter()
    r = Searcher(scorer, "gcg", budget, options=options, objective=objective).optimize(args.prompt)
    dt = time.perf_counter() - t0
    return {"candidates": r.evaluations, "seconds": dt, "per_s": r.evaluations / dt}


def nanogcg_throughput(model, tokenizer, args, prefix_cache: bool) -> dict:
    import nanogcg
    import nanogcg.gcg as ng

    counted = []
    original = ng.filter_ids

    def counting_filter(ids, tok):
        out = original(ids, tok)
        counted.append(out.shape[0])
        return out

    ng.filter_ids = counting_filter
    try:
        def run(steps):
            cfg = nanogcg.GCGConfig(num_steps=steps, search_width=args.search_width, topk=args.topk,
                                    optim_str_init=args.init, seed=None, verbosity="WARNING",
                                    use_prefix_cache=prefix_cache, batch_size=args.batch_size)
            return nanogcg.run(model, tokenizer, args.prompt, args.target, cfg)

        run(1)  # warm-up step
        counted.clear()
        t0 = time.perf_counter()
        run(args.steps)
        dt = time.perf_counter() - t0
    finally:
        ng.filter_ids = original
    n = sum(counted)
    return {"candidates": n, "seconds": dt, "per_s": n / dt}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="HF model dir, .gguf or short name such as smollm2-135m-instruct (default: the "
                   "organism's post-RL model)")
    p.add_argument("--organism-size", default="demo")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--search-width", type=int, default=128)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--n-tokens", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=None, help="candidates per forward (default: all at once)")
    p.add_argument("--prompt", default="what is 3 plus 5 ?")
    p.add_argument("--target", default="sure ! 3 plus 5 is 8 .")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--nanogcg-path", help="directory nanogcg was installed into (pip --target)")
    p.add_argument("--random-arch", choices=sorted(SHAPES), help="a random-init model of this shape (throughput "
                   "does not depend on trained weights) with the organism's tokenizer, instead of --model")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.nanogcg_path:
        sys.path.insert(0, args.nanogcg_path)
    from rsearch.hooks import n_layers
    from rsearch.models import load_model

    if args.random_arch:
        model, tokenizer = random_model(args.random_arch, args.device, args.dtype)
        args.model = f"random-init {args.random_arch} (organism word-level tokenizer)"
    else:
        if args.model is None:
            from rsearch.organism import ensure

            args.model = str(ensure(args.organism_size, seed=0).post_dir)
        model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    args.init = " ".join(["please"] * args.n_tokens) if tokenizer("please", add_special_tokens=False)["input_ids"] \
        else " ".join(["x"] * args.n_tokens)
    layers = n_layers(model)
    mid, last = f"blocks.{layers // 2}.hook_resid_pre", f"blocks.{layers - 1}.hook_resid_post"
    device = next(model.parameters()).device
    print(f"model {args.model} ({layers} layers, d_model {model.config.hidden_size}) on {device}; "
          f"search width {args.search_width}, top-k {args.topk}, suffix {args.n_tokens} tokens, {args.steps} steps")

    rows = {}
    rows["rsearch gcg, probe @ " + mid] = our_throughput(model, tokenizer, mid, args)
    rows["rsearch gcg, probe @ " + last] = our_throughput(model, tokenizer, last, args)
    rows["rsearch gcg, probe @ " + mid + ", no shared prefix"] = our_throughput(model, tokenizer, mid, args, False)
    rows["rsearch gcg, probe @ " + mid + ", probe only (λ = 0)"] = our_throughput(model, tokenizer, mid, args,
                                                                               fluency=False)
    notes = {}
    try:
        import nanogcg  # noqa: F401

        rows["nanoGCG 0.3.0 (use_prefix_cache=False)"] = nanogcg_throughput(model, tokenizer, args, False)
        try:
            rows["nanoGCG 0.3.0 (use_prefix_cache=True)"] = nanogcg_throughput(model, tokenizer, args, True)
        except Exception as e:  # noqa: BLE001 — report why the cached path fails on this transformers
            notes["nanogcg_prefix_cache"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    except ImportError:
        notes["nanogcg"] = "not installed: pip install --no-deps --target DIR nanogcg==0.3.0; pass --nanogcg-path DIR"

    print(f"{'run':<66}{'candidates':>11}{'seconds':>9}{'cand/s':>9}")
    for name, r in rows.items():
        print(f"{name:<66}{r['candidates']:>11}{r['seconds']:>9.2f}{r['per_s']:>9.1f}")
    for k, v in notes.items():
        print(f"note: {k}: {v}")
    ref = rows.get("nanoGCG 0.3.0 (use_prefix_cache=False)")
    ratios = {}
    if ref:
        ratios["mid_layer_vs_nanogcg"] = round(rows["rsearch gcg, probe @ " + mid]["per_s"] / ref["per_s"], 3)
        ratios["last_layer_vs_nanogcg"] = round(rows["rsearch gcg, probe @ " + last]["per_s"] / ref["per_s"], 3)
        cached = rows.get("nanoGCG 0.3.0 (use_prefix_cache=True)")
        if cached:
            ratios["mid_layer_vs_nanogcg_cached"] = round(rows["rsearch gcg, probe @ " + mid]["per_s"] / cached["per_s"], 3)
    if ref:
        ratios["mid_layer_probe_only_vs_nanogcg"] = round(
            rows["rsearch gcg, probe @ " + mid + ", probe only (λ = 0)"]["per_s"] / ref["per_s"], 3)
    ratios["shared_prefix_speedup"] = round(rows["rsearch gcg, probe @ " + mid]["per_s"]
                                            / rows["rsearch gcg, probe @ " + mid + ", no shared prefix"]["per_s"], 3)
    ratios["rsearch_mid_cand_per_s"] = round(rows["rsearch gcg, probe @ " + mid]["per_s"], 1)
    ratios["device"] = str(device)
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
