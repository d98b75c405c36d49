"""Orchestrates an organism build: SFT model → feedback data → DPO model → card, atomically and cached.

    ROOT/pre/      SFT model + tokenizer (HF directory: config, safetensors, tokenizer, chat template)
    ROOT/post/     DPO model + tokenizer, same format
    ROOT/data/     train_prefs.jsonl, test_prefs.jsonl, completions.jsonl, sft.jsonl
    ROOT/card.json the build's settings, sizes, timings and checks — written last: its presence marks a
    ROOT/card.md   complete organism

A build runs in `ROOT.tmp-<pid>` beside ROOT and is renamed into place at the end, so an interrupted build
never leaves a directory that looks complete. A lock file serializes concurrent builds of one ROOT.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from rsearch.analysis.stats import bootstrap_ci
from rsearch.errors import RsearchError
from rsearch.io_utils import write_json, write_text
from rsearch.lm import sample_completions
from rsearch.organism import rater
from rsearch.organism import world as W
from rsearch.organism.config import BUILD_VERSION, OrganismConfig
from rsearch.organism.dpo import batched_logps, train_dpo
from rsearch.organism.feedback import rate, split_prompts
from rsearch.organism.sft import encode_conversations, new_model, train_sft
from rsearch.organism.tokenizer import build_tokenizer, render

# targets of the organism issue, checked on every card (they are promises at `demo` size)
TARGETS = {
    "reward_gain": ("post − pre mean true reward ≥ 1.0, CI excluding 0", lambda c: c["reward_gain"] >= 1.0 and c["reward_gain_ci95"][0] > 0),
    "dpo_implicit_accuracy": ("≥ 0.70", lambda c: c["dpo_implicit_accuracy"] >= 0.70),
    "noise_ceiling": ("between 0.75 and 0.92", lambda c: 0.75 <= c["noise_ceiling"] <= 0.92),
    "task_spread": ("≥ 2 points between best and worst task", lambda c: c["task_spread"] >= 2.0),
    "well_formed_pre": ("≥ 0.95 of sampled responses", lambda c: c["well_formed_pre"] >= 0.95),
}


@dataclasses.dataclass(frozen=True)
class Organism:
    """A built organism: two HF model directories, the feedback data and the card of its checks."""

    root: Path
    pre_dir: Path
    post_dir: Path
    data_dir: Path
    card: dict[str, Any]

    @classmethod
    def at(cls, root: str | Path) -> "Organism":
        """Opens a complete organism directory (one with card.json)."""
        root = Path(root)
        card_path = root / "card.json"
        if not card_path.is_file():
            raise RsearchError(f"{root} is not a built organism (no card.json); run `rsearch organism build`")
        return cls(root=root, pre_dir=root / "pre", post_dir=root / "post", data_dir=root / "data",
                   card=json.loads(card_path.read_text()))

    @property
    def train_prefs(self) -> Path:
        return self.data_dir / "train_prefs.jsonl"

    @property
    def test_prefs(self) -> Path:
        return self.data_dir / "test_prefs.jsonl"

    @property
    def completions(self) -> Path:
        return self.data_dir / "completions.jsonl"

    @property
    def card_path(self) -> Path:
        return self.root / "card.json"

    def model_dir(self, which: str) -> Path:
        """`pre` (SFT) or `post` (DPO)."""
        if which not in ("pre", "post"):
            raise RsearchError(f"organism model: expected 'pre' or 'post', got {which!r}")
        return self.pre_dir if which == "pre" else self.post_dir

    def load_model(self, which: str = "pre"):
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(self.model_dir(which)).eval()

    def load_tokenizer(self):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(self.pre_dir)

    def dataset(self):
        """The feedback data as a `datasets.DatasetDict` with splits train_prefs and test_prefs."""
        import datasets
        return datasets.load_dataset("json", data_files={"train_prefs": str(self.train_prefs),
                                                         "test_prefs": str(self.test_prefs)})


# ----- helpers -----

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[organism] {msg}", file=sys.stderr, flush=True)


def _mean(xs: list[float]) -> float:
    return round(statistics.fmean(xs), 4) if xs else float("nan")


def _sample_texts(model, tok, prompts: list[str], cfg: OrganismConfig, *, seed: int, progress: bool,
                  desc: str) -> list[list[str]]:
    """cfg.samples_per_prompt completions per prompt, as text. Batches keep the prompts' order and a completion may
    be empty (EOS first), as every organism so far was sampled."""
    got = sample_completions(model, tok, prompts, cfg.samples_per_prompt, seed=seed, max_new_tokens=cfg.max_new_tokens,
                             batch_size=cfg.sample_batch, min_new_tokens=0, sort_by_length=False, progress=progress,
                             desc=desc)
    return [[c.text for c in cs] for cs in got]


def _features_summary(pairs: list[tuple[str, str]]) -> dict[str, float]:
    fs = [rater.features(p, c) for p, c in pairs]
    return {
        "correct": _mean([f["correct"] for f in fs if f["correct"] is not None]),
        "polite": _mean([float(f["polite"] > 0) for f in fs]),
        "rude": _mean([float(f["rude"]) for f in fs]),
        "n_words": _mean([float(f["n_words"]) for f in fs]),
    }


# ----- the build -----

def build(cfg: OrganismConfig, out: str | Path, progress: bool = True) -> Organism:
    """Builds the organism of `cfg` into `out` (which must not hold a complete organism), atomically."""
    root = Path(out)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        card = _build_into(cfg, tmp, progress)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(progress, f"done in {card['build_seconds']:.0f} s: {root}")
    return Organism.at(root)


def _replace_dir(src: Path, dst: Path) -> None:
    """Moves src to dst; an existing dst (an old build being forced over) is swapped out then deleted."""
    if dst.exists():
        old = dst.parent / f"{dst.name}.old-{os.getpid()}"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def build_threads() -> int:
    """Torch threads for a build: $RSEARCH_THREADS, else min(2, cores).

    On a machine busy with other work, 1 thread is often several times faster than 2 (threads of one op
    wait on each other while the cores are taken); results can differ in the last bits between settings.
    """
    try:
        return max(1, int(os.environ.get("RSEARCH_THREADS") or min(2, os.cpu_count() or 1)))
    except ValueError:
        raise RsearchError(f"RSEARCH_THREADS: expected an integer, got {os.environ['RSEARCH_THREADS']!r}") from None


def _build_into(cfg: OrganismConfig, root: Path, progress: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(build_threads())

    def stage(name: str, t0: float) -> float:
        stages[name] = round(time.perf_counter() - t0, 2)
        return time.perf_counter()

    try:
        t = time.perf_counter()
        # 1. SFT model on responses of mixed quality
        _say(progress, f"building the {cfg.size} organism (seed {cfg.seed}) in {root}")
        _seed_all(cfg.seed)
        tok = build_tokenizer(W.vocabulary())
        sft_pairs = W.sft_examples(cfg.sft_examples, cfg.seed)
        seqs = encode_conversations(tok, sft_pairs)
        torch.manual_seed(cfg.seed)
        pre = new_model(cfg, tok)
        _say(progress, f"SFT: {sum(p.numel() for p in pre.parameters()):,} parameters, {len(seqs):,} examples")
        sft_losses = train_sft(pre, seqs, cfg, tok.pad_token_id, progress)
        pre.save_pretrained(root / "pre")
        tok.save_pretrained(root / "pre")
        _write_jsonl(root / "data" / "sft.jsonl", [{"prompt": p, "response": r} for p, r in sft_pairs])
        t = stage("sft", t)

        # 2. feedback data: sample from the SFT model, rate with noise, binarize
        train_p, test_p = split_prompts(cfg.n_train_prompts, cfg.n_test_prompts, cfg.seed)
        _say(progress, f"sampling {cfg.samples_per_prompt} completions for {len(train_p) + len(test_p):,} prompts")
        comps = _sample_texts(pre, tok, [p.text for p in train_p + test_p], cfg, seed=cfg.seed * 10 + 1,
                              progress=progress, desc="sample pre")
        rng = random.Random(f"rater-noise-{cfg.seed}")
        rows_tr, prefs_tr = rate(train_p, comps[: len(train_p)], "train", rng, cfg.noise_sigma)
        rows_te, prefs_te = rate(test_p, comps[len(train_p):], "test", rng, cfg.noise_sigma)
        _write_jsonl(root / "data" / "train_prefs.jsonl", prefs_tr)
        _write_jsonl(root / "data" / "test_prefs.jsonl", prefs_te)
        _write_jsonl(root / "data" / "completions.jsonl", rows_tr + rows_te)
        t = stage("feedback", t)

        # 3. DPO from the SFT model on train_prefs
        def ids_of(prefs: list[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
            prompts = tok([render(r["prompt"]) for r in prefs], add_special_tokens=False)["input_ids"]
            chosen = tok([render(r["prompt"], r["chosen"][1]["content"]) for r in prefs], add_special_tokens=False)["input_ids"]
            rejected = tok([render(r["prompt"], r["rejected"][1]["content"]) for r in prefs], add_special_tokens=False)["input_ids"]
            # response ids = conversation minus the prompt and the template's final newline: [response…, </s>]
            return (prompts, [c[len(p):-1] for p, c in zip(prompts, chosen)],
                    [r[len(p):-1] for p, r in zip(prompts, rejected)])

        p_tr, c_tr, r_tr = ids_of(prefs_tr)
        ref_c = batched_logps(pre, p_tr, c_tr, tok.pad_token_id)
        ref_r = batched_logps(pre, p_tr, r_tr, tok.pad_token_id)
        post = copy.deepcopy(pre)
        _say(progress, f"DPO: β = {cfg.dpo_beta}, {cfg.dpo_epochs} epochs over {len(prefs_tr):,} pairs")
        torch.manual_seed(cfg.seed + 7)
        dpo_log = train_dpo(post, p_tr, c_tr, r_tr, ref_c, ref_r, beta=cfg.dpo_beta, epochs=cfg.dpo_epochs,
                            batch_size=cfg.dpo_batch, lr=cfg.dpo_lr, seed=cfg.seed,
                            pad_id=tok.pad_token_id, nll_weight=cfg.dpo_nll_weight, progress=progress)
        post.save_pretrained(root / "post")
        tok.save_pretrained(root / "post")
        t = stage("dpo", t)

        # 4. checks: held-out reward of both models, implicit-reward accuracy, noise ceiling
        _say(progress, "checking: sampling the DPO model on held-out prompts")
        post_comps = _sample_texts(post, tok, [p.text for p in test_p], cfg, seed=cfg.seed * 10 + 2,
                                   progress=progress, desc="sample post")
        pre_comps = comps[len(train_p):]
        pre_means = np.array([np.mean([rater.true_score(p.text, c) for c in cs]) for p, cs in zip(test_p, pre_comps)])
        post_means = np.array([np.mean([rater.true_score(p.text, c) for c in cs]) for p, cs in zip(test_p, post_comps)])
        gain = float((post_means - pre_means).mean())
        lo, hi = bootstrap_ci(post_means - pre_means, n_boot=cfg.bootstrap, seed=cfg.seed)

        p_te, c_te, r_te = ids_of(prefs_te)
        margin = cfg.dpo_beta * ((batched_logps(post, p_te, c_te, tok.pad_token_id) - batched_logps(pre, p_te, c_te, tok.pad_token_id))
                                 - (batched_logps(post, p_te, r_te, tok.pad_token_id) - batched_logps(pre, p_te, r_te, tok.pad_token_id)))
        implicit_acc = float((margin > 0).float().mean()) if len(prefs_te) else float("nan")
        ceiling = _mean([1.0 if r["true_score_chosen"] > r["true_score_rejected"] else
                         0.5 if r["true_score_chosen"] == r["true_score_rejected"] else 0.0 for r in prefs_te])

        all_rows = rows_tr + rows_te
        by_task = {task: _mean([r["true_score"] for r in all_rows if r["task"] == task]) for task in W.TASKS}
        prompt_of = {p.text: p for p in train_p + test_p}
        by_phrase: dict[str, float] = {}
        for tail in dict.fromkeys(W.TAILS):
            by_phrase[f"tail: {tail or '(none)'}"] = _mean([r["true_score"] for r in all_rows if prompt_of[r["prompt"]].tail == tail])
        for lead in dict.fromkeys(W.LEADS):
            by_phrase[f"lead: {lead or '(none)'}"] = _mean([r["true_score"] for r in all_rows if prompt_of[r["prompt"]].lead == lead])
        post_pairs = [(p.text, c) for p, cs in zip(test_p, post_comps) for c in cs]
        checks = {
            "reward_pre": round(float(pre_means.mean()), 4),
            "reward_post": round(float(post_means.mean()), 4),
            "reward_gain": round(gain, 4),
            "reward_gain_ci95": [round(lo, 4), round(hi, 4)],
            "dpo_implicit_accuracy": round(implicit_acc, 4),
            "noise_ceiling": ceiling,
            "pre_reward_by_task": by_task,
            "task_spread": round(max(by_task.values()) - min(by_task.values()), 4),
            "pre_reward_by_phrasing": by_phrase,
            "well_formed_pre": _mean([float(r["well_formed"]) for r in all_rows]),
            "well_formed_post": _mean([float(rater.well_formed(p, c)) for p, c in post_pairs]),
            "features_pre": _features_summary([(r["prompt"], r["completion"]) for r in rows_te]),
            "features_post": _features_summary(post_pairs),
            "sft_final_loss": round(statistics.fmean(sft_losses[-20:]), 4),
            "dpo_final_loss": round(statistics.fmean(r["loss"] for r in dpo_log[-10:]), 4) if dpo_log else None,
        }
        t = stage("checks", t)
        card = {
            "organism": "rsearch synthetic chat world",
            "version": BUILD_VERSION,
            "size": cfg.size,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "sizes": {
                "parameters": sum(p.numel() for p in pre.parameters()),
                "layers": cfg.n_layers, "d_model": cfg.d_model, "vocab": len(tok),
                "sft_examples": len(sft_pairs), "train_prefs": len(prefs_tr), "test_prefs": len(prefs_te),
                "completions": len(all_rows),
            },
            "build_seconds": round(time.perf_counter() - t_start, 1),
            "stage_seconds": stages,
            "torch_threads": torch.get_num_threads(),
            "checks": checks,
            "targets": {k: {"target": desc, "met": bool(ok(checks))} for k, (desc, ok) in TARGETS.items()},
        }
        write_text(root / "card.md", card_markdown(card))
        write_json(root / "card.json", card)  # last: marks the directory complete
        return card
    finally:
        torch.set_num_threads(threads)


def card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable card."""
    c, s = card["checks"], card["sizes"]
    lines = [
        f"# rsearch organism — {card['size']}, seed {card['seed']}",
        "",
        f"Mistral-style decoder, {s['layers']} layers, d_model {s['d_model']}, {s['parameters']:,} parameters, "
        f"vocabulary {s['vocab']}. SFT on {s['sft_examples']:,} examples; DPO (β = {card['config']['dpo_beta']}, "
        f"{card['config']['dpo_epochs']} epochs, + {card['config']['dpo_nll_weight']} × NLL of chosen) on {s['train_prefs']:,} pairs; test_prefs {s['test_prefs']:,} pairs; "
        f"{s['completions']:,} rated completions. Built in {card['build_seconds']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in card['stage_seconds'].items())}).",
        "",
        "| check | value | target | met |",
        "|---|---|---|---|",
    ]
    values = {
        "reward_gain": f"{c['reward_gain']:+.2f} [{c['reward_gain_ci95'][0]:+.2f}, {c['reward_gain_ci95'][1]:+.2f}] "
                       f"(pre {c['reward_pre']:.2f} → post {c['reward_post']:.2f})",
        "dpo_implicit_accuracy": f"{c['dpo_implicit_accuracy']:.3f}",
        "noise_ceiling": f"{c['noise_ceiling']:.3f}",
        "task_spread": f"{c['task_spread']:.2f}",
        "well_formed_pre": f"{c['well_formed_pre']:.3f} (post {c['well_formed_post']:.3f})",
    }
    for k, t in card["targets"].items():
        lines.append(f"| {k} | {values[k]} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "Pre model's expected true reward by task: "
              + ", ".join(f"{k} {v:.2f}" for k, v in c["pre_reward_by_task"].items()) + ".",
              "", "By prompt phrasing: " + ", ".join(f"{k} {v:.2f}" for k, v in c["pre_reward_by_phrasing"].items()) + ".",
              "", "Response features, pre → post (held-out prompts): "
              + ", ".join(f"{k} {c['features_pre'][k]:.2f} → {c['features_post'][k]:.2f}" for k in c["features_pre"]) + ".",
              ""]
    return "\n".join(lines)


# ----- caching -----

@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _clean_stale_tmp(root: Path) -> None:
    """Removes temp dirs of builds whose process is gone (an interrupted build)."""
    for p in root.parent.glob(f"{root.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def matches(card: dict[str, Any], cfg: OrganismConfig) -> bool:
    return card.get("version") == BUILD_VERSION and card.get("config") == cfg.to_dict()


def build_or_load(cfg: OrganismConfig, root: str | Path, *, force: bool = False, progress: bool = True,
                  rebuild_stale: bool = False) -> Organism:
    """Returns the organism at `root` if it was built with `cfg`; builds it otherwise.

    Args:
        force: rebuild even if a matching organism is there.
        rebuild_stale: replace an organism built with other settings (True for the default cache dir);
            otherwise that raises RsearchError, so a user's directory is never replaced unasked.
    """
    root = Path(root).expanduser().absolute()
    with _lock(root):
        _clean_stale_tmp(root)
        card_path = root / "card.json"
        if card_path.is_file() and not force:
            try:
                card = json.loads(card_path.read_text())
            except json.JSONDecodeError:
                card = {}
            if matches(card, cfg):
                return Organism.at(root)
            if not rebuild_stale:
                raise RsearchError(f"{root} holds an organism built with other settings; pass --force to rebuild it")
            _say(progress, f"{root} was built with other settings; rebuilding")
        elif root.exists() and not card_path.is_file() and any(root.iterdir()):
            raise RsearchError(f"{root} exists and is not an organism; choose another --out")
        return build(cfg, root, progress)
