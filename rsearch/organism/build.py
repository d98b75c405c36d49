"""Orchestrates an organism build: SFT model → feedback data → DPO model → card, atomically and cached.

    ROOT/pre/      SFT model + tokenizer (HF directory: config, safetensors, tokenizer, chat template)
    ROOT/post/     DPO model + tokenizer, same format
    ROOT/data/     train_prefs.jsonl, test_prefs.jsonl, completions.jsonl, skills.jsonl, sft.jsonl
    ROOT/card.json the build's settings, sizes, timings and checks — written last: its presence marks a
    ROOT/card.md   complete organism

A build runs in `ROOT.tmp-<pid>-<random>` (marked as its own) beside ROOT and is renamed into place at the end,
so an interrupted build never leaves a directory that looks complete. A lock file serializes concurrent builds of
one ROOT. A build deletes only what it created.

On reuse every recorded file must be there with its size and sha256; a damaged build (a file deleted, truncated
or overwritten) is rebuilt, with one line naming the file (`Organism.at` refuses it with that line). A card
written before the manifest existed (no "files") is trusted as before, so existing caches are not all rebuilt
at once; BUILD_VERSION is unchanged, the artifacts being the same.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from rsearch.errors import RsearchError
from rsearch.integrity import damage, manifest
from rsearch.io_utils import check_out_dir, file_lock, write_json, write_text
from rsearch.lm import sample_completions
from rsearch.models import load_tokenizer
from rsearch.organism import rater
from rsearch.organism import world as W
from rsearch.organism.config import BUILD_VERSION, OrganismConfig
from rsearch.organism.dpo import batched_logps, response_logps, train_dpo
from rsearch.organism.reward_head import (HeadTraining, RewardHeads, expected_rewards, head_targets, read_heads,
                                         read_positions)
from rsearch.probes.metrics import pearson
from rsearch.organism.checks import pair_checks, pref_ids, reward_parts_gain
from rsearch.organism.feedback import minimal_pairs, rate, split_prompts
from rsearch.organism.sft import encode_conversations, new_model, train_sft, train_skills
from rsearch.organism.tokenizer import build_tokenizer

log = logging.getLogger("rsearch.organism")

# targets of the organism issue, checked on every card (they are promises at `demo` size)
TARGETS = {
    "reward_gain": ("post − pre mean true reward ≥ 1.0, CI excluding 0", lambda c: c["reward_gain"] >= 1.0 and c["reward_gain_ci95"][0] > 0),
    "correct_rate_gain": ("post − pre share of right answers ≥ +0.10, CI excluding 0",
                          lambda c: c["correct_rate_gain"] >= 0.10 and c["correct_rate_gain_ci95"][0] > 0),
    "dpo_implicit_accuracy": ("≥ 0.70", lambda c: c["dpo_implicit_accuracy"] >= 0.70),
    "noise_ceiling": ("between 0.75 and 0.92", lambda c: 0.75 <= c["noise_ceiling"] <= 0.92),
    "text_baseline_accuracy": ("≤ noise ceiling − 0.15", lambda c: c["text_baseline_accuracy"] <= c["noise_ceiling"] - 0.15),
    "text_baseline_minimal": ("≤ 0.60 on minimal pairs", lambda c: c["text_baseline_minimal"] is not None and c["text_baseline_minimal"] <= 0.60),
    "logprob_post_minimal": ("post-model log-prob ≥ 0.75 on minimal pairs",
                             lambda c: c["logprob_post_minimal"] is not None and c["logprob_post_minimal"] >= 0.75),
    "well_formed": ("≥ 0.95 of sampled responses, pre and post", lambda c: min(c["well_formed_pre"], c["well_formed_post"]) >= 0.95),
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
        """Opens a complete organism directory (one with card.json and, where the card lists them, every file
        at its recorded size; one-line RsearchError naming a missing or truncated file)."""
        root = Path(root)
        card_path = root / "card.json"
        if not card_path.is_file():
            raise RsearchError(f"{root} is not a built organism (no card.json); run `rsearch organism build`")
        card = json.loads(card_path.read_text())
        if problem := build_damage(root, card, hashes=False):
            raise RsearchError(f"{root} is a damaged organism build: {problem}; run `rsearch organism build` "
                               "to rebuild it")
        return cls(root=root, pre_dir=root / "pre", post_dir=root / "post", data_dir=root / "data", card=card)

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

        # transformers' own model, trainable and where it loads: not rsearch.models.load_model's frozen copy
        return AutoModelForCausalLM.from_pretrained(self.model_dir(which)).eval()

    def load_tokenizer(self):
        return load_tokenizer(self.pre_dir)

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
    tmp = _new_tmp_dir(root)
    try:
        card = _build_into(cfg, tmp, progress)
        (tmp / TMP_MARKER).unlink()
        record_files(tmp, card)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(progress, f"done in {card['build_seconds']:.0f} s: {root}")
    return Organism.at(root)


MODEL_PARTS = ("pre", "post", "data")  # the directories whose files the card's manifest covers


def record_files(root: Path, card: dict[str, Any]) -> None:
    """Adds the manifest of the build's files (size, sha256) to `card` and rewrites ROOT/card.json."""
    files = [str(p.relative_to(root)) for part in MODEL_PARTS for p in (root / part).rglob("*") if p.is_file()]
    card["files"] = manifest(root, files)
    write_json(root / "card.json", card)


def build_damage(root: Path, card: dict[str, Any], *, hashes: bool = True) -> str | None:
    """What is wrong with the build's files (a missing file, a wrong size or, with `hashes`, a changed sha256),
    or None; a card without a manifest (written before it existed) is trusted. Hashing reads the whole build:
    the tiny organism is ~6 MB, the demo one tens of MB, well under a second either way."""
    if "files" not in card:
        return None
    return damage(root, card["files"], hashes=hashes)


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
        # 1. SFT model: the tasks' skills (always-right plain answers), then responses of mixed quality
        _say(progress, f"building the {cfg.size} organism (seed {cfg.seed}) in {root}")
        _seed_all(cfg.seed)
        tok = build_tokenizer(W.vocabulary())
        torch.manual_seed(cfg.seed)
        pre = new_model(cfg, tok)
        skills_losses: list[float] = []
        skills_pairs = W.skills_examples(cfg.skills_examples, cfg.seed, cfg.skills_task_weights)
        if skills_pairs:
            seqs, starts = encode_conversations(tok, skills_pairs)
            _say(progress, f"skills: {sum(p.numel() for p in pre.parameters()):,} parameters, {len(seqs):,} examples")
            skills_losses = train_skills(pre, seqs, starts, cfg, tok.pad_token_id, progress)
            t = stage("skills", t)
        _write_jsonl(root / "data" / "skills.jsonl", [{"prompt": p, "response": r} for p, r in skills_pairs])
        sft_pairs = W.sft_examples(cfg.sft_examples, cfg.seed)
        seqs, starts = encode_conversations(tok, sft_pairs)
        _say(progress, f"SFT: {len(seqs):,} examples of mixed quality")
        sft_losses = train_sft(pre, seqs, starts, cfg, tok.pad_token_id, progress)
        pre.save_pretrained(root / "pre")
        tok.save_pretrained(root / "pre")
        _write_jsonl(root / "data" / "sft.jsonl", [{"prompt": p, "response": r} for p, r in sft_pairs])
        t = stage("sft", t)

        # 2. feedback data: sample from the SFT model, rate with noise, binarize (a share as minimal pairs)
        train_p, test_p = split_prompts(cfg.n_train_prompts, cfg.n_test_prompts, cfg.seed)
        _say(progress, f"sampling {cfg.samples_per_prompt} completions for {len(train_p) + len(test_p):,} prompts")
        comps = _sample_texts(pre, tok, [p.text for p in train_p + test_p], cfg, seed=cfg.seed * 10 + 1,
                              progress=progress, desc="sample pre")
        rng = random.Random(f"rater-noise-{cfg.seed}")
        rows_tr, prefs_tr = rate(train_p, comps[: len(train_p)], "train", rng, cfg.noise_sigma,
                                 minimal_pairs(train_p, cfg.minimal_share, cfg.seed, "train"))
        rows_te, prefs_te = rate(test_p, comps[len(train_p):], "test", rng, cfg.noise_sigma,
                                 minimal_pairs(test_p, cfg.minimal_share, cfg.seed, "test"))
        _write_jsonl(root / "data" / "train_prefs.jsonl", prefs_tr)
        _write_jsonl(root / "data" / "test_prefs.jsonl", prefs_te)
        _write_jsonl(root / "data" / "completions.jsonl", rows_tr + rows_te)
        t = stage("feedback", t)

        # 3. DPO from the SFT model on train_prefs
        _say(progress, f"DPO: β = {cfg.dpo_beta}, {cfg.dpo_epochs} epochs over {len(prefs_tr):,} pairs, "
                       f"NLL weight {cfg.dpo_nll_weight}")
        expected = expected_rewards(rows_tr + rows_te)
        post, dpo_log, heads = dpo_from(pre, tok, prefs_tr, cfg, progress, expected)
        post.save_pretrained(root / "post")
        tok.save_pretrained(root / "post")
        if heads is not None:
            save_file({k: v.detach().contiguous() for k, v in heads.heads.state_dict().items()},
                      str(root / "reward_head.safetensors"), metadata={"layer": str(cfg.head_layer)})
        t = stage("dpo", t)

        # 4. checks on held-out prompts and pairs
        _say(progress, "checking: sampling the DPO model on held-out prompts")
        checks = model_checks(pre, post, tok, cfg, train_p, test_p, comps, rows_tr + rows_te, prefs_tr, prefs_te,
                              progress)
        checks["sft_final_loss"] = round(statistics.fmean(sft_losses[-20:]), 4)
        checks["skills_final_loss"] = round(statistics.fmean(skills_losses[-20:]), 4) if skills_losses else None
        checks["dpo_final_loss"] = round(statistics.fmean(r["loss"] for r in dpo_log[-10:]), 4) if dpo_log else None
        if heads is not None:
            checks["reward_head"] = head_checks(post, tok, heads, prefs_te, expected, dpo_log)
        t = stage("checks", t)
        card = {
            "organism": "rsearch synthetic chat world v3",
            "version": BUILD_VERSION,
            "size": cfg.size,
            "variant": cfg.variant,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "sizes": {
                "parameters": sum(p.numel() for p in pre.parameters()),
                "layers": cfg.n_layers, "d_model": cfg.d_model, "vocab": len(tok),
                "skills_examples": cfg.skills_examples, "sft_examples": len(sft_pairs),
                "train_prefs": len(prefs_tr), "test_prefs": len(prefs_te),
                "completions": len(rows_tr) + len(rows_te),
                "pair_types": {split: {t: sum(r["pair_type"] == t for r in prefs) for t in ("minimal", "ordinary")}
                               for split, prefs in (("train_prefs", prefs_tr), ("test_prefs", prefs_te))},
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


def dpo_from(pre, tok, prefs_tr: list[dict[str, Any]], cfg: OrganismConfig, progress: bool,
             expected: dict[str, float]):
    """A copy of `pre` trained by DPO on the preference rows; returns (post, per-step log, the reward heads'
    training: None but in the reward-reading variant). `expected`: prompt id → expected reward."""
    p_tr, c_tr, r_tr = pref_ids(tok, prefs_tr)
    ref_c = batched_logps(pre, p_tr, c_tr, tok.pad_token_id)
    ref_r = batched_logps(pre, p_tr, r_tr, tok.pad_token_id)
    post = copy.deepcopy(pre)
    heads = None
    if cfg.variant == "reward-reading":
        torch.manual_seed(cfg.seed + 11)
        heads = HeadTraining(RewardHeads(cfg.d_model), cfg.head_layer, cfg.reward_head_weight,
                             head_targets(prefs_tr, expected))
    torch.manual_seed(cfg.seed + 7)
    log = train_dpo(post, p_tr, c_tr, r_tr, ref_c, ref_r, beta=cfg.dpo_beta, epochs=cfg.dpo_epochs,
                    batch_size=cfg.dpo_batch, lr=cfg.dpo_lr, seed=cfg.seed, pad_id=tok.pad_token_id,
                    nll_weight=cfg.dpo_nll_weight, progress=progress, heads=heads)
    return post, log, heads


@torch.no_grad()
def head_checks(post, tok, heads: HeadTraining, prefs_te: list[dict[str, Any]], expected: dict[str, float],
                log: list[dict[str, float]]) -> dict[str, Any]:
    """How well the trained reward heads read the held-out pairs: Pearson r of the completion head (at
    completion_end) with the true reward and of the prompt head (at user_end) with the expected reward."""
    t = head_targets(prefs_te, expected, heads.targets.scale)
    p, c, r = pref_ids(tok, prefs_te)
    done: list[torch.Tensor] = []
    prompt: list[torch.Tensor] = []
    truth: list[torch.Tensor] = []
    for s in range(0, len(p), 64):
        pp, cc, rr = p[s:s + 64], c[s:s + 64], r[s:s + 64]
        _, hidden = response_logps(post, pp * 2, cc + rr, tok.pad_token_id, hidden_layer=heads.layer)  # [2b, T, d]
        completion, at_user = read_heads(heads.heads, hidden, *read_positions(pp * 2, cc + rr), len(pp))
        done.append(completion)
        prompt.append(at_user)
        truth.append(torch.cat([t.chosen[s:s + 64], t.rejected[s:s + 64]]))
    return {"layer": heads.layer, "weight": heads.weight, "n_test_pairs": len(p),
            "test_r_completion": round(pearson(torch.cat(done), torch.cat(truth)), 4),
            "test_r_prompt": round(pearson(torch.cat(prompt), t.prompt), 4),
            "final_head_loss": round(statistics.fmean(x["head_loss"] for x in log[-10:]), 4) if log else None}


def model_checks(pre, post, tok, cfg: OrganismConfig, train_p: list[W.Prompt], test_p: list[W.Prompt],
                 comps: list[list[str]], rows: list[dict[str, Any]], prefs_tr: list[dict[str, Any]],
                 prefs_te: list[dict[str, Any]], progress: bool) -> dict[str, Any]:
    """The card's checks: the true reward of both models' samples on held-out prompts (and its parts), the
    scorers' accuracy on the test pairs, and the feedback data's reward by task and phrasing.

    Args:
        comps: the pre model's sampled completions of train_p + test_p, in that order.
        rows: the rated completion rows of the feedback data.
    """
    post_comps = _sample_texts(post, tok, [p.text for p in test_p], cfg, seed=cfg.seed * 10 + 2,
                               progress=progress, desc="sample post")
    pre_comps = comps[len(train_p):]
    texts = [p.text for p in test_p]
    gain = reward_parts_gain(texts, pre_comps, post_comps, cfg.bootstrap, cfg.seed)
    pairs = pair_checks(pre, post, tok, prefs_tr, prefs_te, cfg.dpo_beta, cfg.bootstrap, cfg.seed)
    by_task = {task: _mean([r["true_score"] for r in rows if r["task"] == task]) for task in W.TASKS}
    prompt_of = {p.text: p for p in train_p + test_p}
    by_phrase: dict[str, float] = {}
    for tail in dict.fromkeys(W.TAILS):
        by_phrase[f"tail: {tail or '(none)'}"] = _mean([r["true_score"] for r in rows if prompt_of[r["prompt"]].tail == tail])
    for lead in dict.fromkeys(W.LEADS):
        by_phrase[f"lead: {lead or '(none)'}"] = _mean([r["true_score"] for r in rows if prompt_of[r["prompt"]].lead == lead])
    post_pairs = [(p, c) for p, cs in zip(texts, post_comps) for c in cs]
    pre_pairs = [(p, c) for p, cs in zip(texts, pre_comps) for c in cs]
    return {
        "reward_pre": gain["score"]["pre"],
        "reward_post": gain["score"]["post"],
        "reward_gain": gain["score"]["gain"],
        "reward_gain_ci95": gain["score"]["ci95"],
        "reward_parts_gain": gain,
        "correct_rate_gain": gain["correct_rate"]["gain"],
        "correct_rate_gain_ci95": gain["correct_rate"]["ci95"],
        "pairs": pairs,
        "dpo_implicit_accuracy": pairs["dpo_implicit"]["all"]["accuracy"],
        "noise_ceiling": pairs["noise_ceiling"]["all"]["accuracy"],
        "text_baseline_accuracy": pairs["text_baseline"]["all"]["accuracy"],
        "text_baseline_minimal": pairs["text_baseline"]["minimal"]["accuracy"],
        "logprob_post_minimal": pairs["logprob_post"]["minimal"]["accuracy"],
        "pre_reward_by_task": by_task,
        "task_spread": round(max(by_task.values()) - min(by_task.values()), 4),
        "pre_reward_by_phrasing": by_phrase,
        "well_formed_pre": _mean([float(r["well_formed"]) for r in rows]),
        "well_formed_post": _mean([float(rater.well_formed(p, c)) for p, c in post_pairs]),
        "features_pre": _features_summary(pre_pairs),
        "features_post": _features_summary(post_pairs),
    }


def _fmt_acc(a: dict[str, Any]) -> str:
    if a["accuracy"] is None:
        return "–"
    return f"{a['accuracy']:.3f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"


def card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable card."""
    c, s, k = card["checks"], card["sizes"], card["config"]
    types = s["pair_types"]
    n_te = max(1, s["test_prefs"])
    nll = k["dpo_nll_weight"]
    lines = [
        f"# rsearch organism — {card['size']}, seed {card['seed']}",
        "",
        f"Mistral-style decoder, {s['layers']} layers, d_model {s['d_model']}, {s['parameters']:,} parameters, "
        f"vocabulary {s['vocab']}. "
        + (f"A skills phase on {s['skills_examples']:,} always-right plain answers (answer-only loss), then "
           if s.get("skills_examples") else "No skills phase; ")
        + f"SFT on {s['sft_examples']:,} examples of mixed quality (train items only); "
        f"DPO (β = {k['dpo_beta']}, {k['dpo_epochs']} epochs, "
        + (f"+ {nll} × NLL of chosen: plain DPO taught this small model style and word salad, not correctness "
           "(measured on the demo, see config.py)" if nll else "plain DPO, no NLL term")
        + f") on {s['train_prefs']:,} pairs; test_prefs {s['test_prefs']:,} pairs on held-out items; "
        f"{s['completions']:,} rated completions. Pairs: train {types['train_prefs']['minimal']} minimal / "
        f"{types['train_prefs']['ordinary']} ordinary; test {types['test_prefs']['minimal']} minimal "
        f"({types['test_prefs']['minimal'] / n_te:.0%}) / {types['test_prefs']['ordinary']} ordinary. "
        f"Built in {card['build_seconds']:.0f} s ({', '.join(f'{n} {v:.0f} s' for n, v in card['stage_seconds'].items())}).",
        "",
        "| check | value | target | met |",
        "|---|---|---|---|",
    ]
    values = {
        "reward_gain": f"{c['reward_gain']:+.2f} [{c['reward_gain_ci95'][0]:+.2f}, {c['reward_gain_ci95'][1]:+.2f}] "
                       f"(pre {c['reward_pre']:.2f} → post {c['reward_post']:.2f})",
        "correct_rate_gain": f"{c['correct_rate_gain']:+.3f} [{c['correct_rate_gain_ci95'][0]:+.3f}, "
                             f"{c['correct_rate_gain_ci95'][1]:+.3f}]",
        "dpo_implicit_accuracy": f"{c['dpo_implicit_accuracy']:.3f}",
        "noise_ceiling": f"{c['noise_ceiling']:.3f}",
        "text_baseline_accuracy": f"{c['text_baseline_accuracy']:.3f} (ceiling − {c['noise_ceiling'] - c['text_baseline_accuracy']:.3f})",
        "text_baseline_minimal": f"{c['text_baseline_minimal']:.3f}",
        "logprob_post_minimal": f"{c['logprob_post_minimal']:.3f}",
        "well_formed": f"pre {c['well_formed_pre']:.3f}, post {c['well_formed_post']:.3f}",
    }
    for name, t in card["targets"].items():
        lines.append(f"| {name} | {values[name]} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    p = c["pairs"]
    lines += ["", "Accuracy on the test pairs (one pair per prompt; 95% CI resampling prompts):", "",
              "| scorer | all | minimal pairs | ordinary pairs |", "|---|---|---|---|"]
    names = {"noise_ceiling": "noise ceiling (true rater vs label)", "dpo_implicit": "DPO implicit reward",
             "logprob_post": "post-model mean log-prob", "logprob_pre": "pre-model mean log-prob",
             "text_baseline": "text only: words + bigrams of prompt + completion",
             "text_baseline_completion": "text only: words + bigrams of completion"}
    for key, label in names.items():
        lines.append(f"| {label} | {_fmt_acc(p[key]['all'])} | {_fmt_acc(p[key]['minimal'])} | {_fmt_acc(p[key]['ordinary'])} |")
    g = c["reward_parts_gain"]
    lines += ["", "True reward of sampled answers on held-out prompts, pre → post (post − pre, 95% CI over prompts):", "",
              "| part | pre | post | post − pre |", "|---|---|---|---|"]
    for key, label in (("score", "true reward"), ("correct_points", "correctness part (5 · correct)"),
                       ("style_points", "style part (politeness, rudeness, length)"),
                       ("penalty_points", "malformed penalty and clipping"), ("correct_rate", "share of right answers")):
        lines.append(f"| {label} | {g[key]['pre']:.3f} | {g[key]['post']:.3f} | {g[key]['gain']:+.3f} "
                     f"[{g[key]['ci95'][0]:+.3f}, {g[key]['ci95'][1]:+.3f}] |")
    lines += ["", "Minimal pairs by task (post-model log-prob / pre-model log-prob / DPO implicit / text only): "
              + ", ".join(f"{t} {p['minimal_by_task']['logprob_post'].get(t, float('nan')):.2f} / "
                          f"{p['minimal_by_task']['logprob_pre'].get(t, float('nan')):.2f} / "
                          f"{p['minimal_by_task']['dpo_implicit'].get(t, float('nan')):.2f} / "
                          f"{p['minimal_by_task']['text_baseline'].get(t, float('nan')):.2f}"
                          for t in W.TASKS) + ".",
              "", "Pre model's expected true reward by task: "
              + ", ".join(f"{n} {v:.2f}" for n, v in c["pre_reward_by_task"].items()) + ".",
              "", "By prompt phrasing: " + ", ".join(f"{n} {v:.2f}" for n, v in c["pre_reward_by_phrasing"].items()) + ".",
              "", "Response features, pre → post (held-out prompts): "
              + ", ".join(f"{n} {c['features_pre'][n]:.2f} → {c['features_post'][n]:.2f}" for n in c["features_pre"]) + ".",
              ""]
    return "\n".join(lines)


# ----- caching -----

@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Serializes builds of one ROOT (`.ROOT.lock` beside it, removed on release, even when refused)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock", wait=True, what=f"organism {root}"):
        yield


TMP_MARKER = ".rsearch-build"  # in every temp dir a build creates: the pid of its builder


def _new_tmp_dir(root: Path) -> Path:
    """A fresh `ROOT.tmp-<pid>-<random>` beside ROOT, marked as this build's own."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-{os.getpid()}-", dir=root.parent))
    (tmp / TMP_MARKER).write_text(f"{os.getpid()}\n")
    return tmp


def _clean_stale_tmp(root: Path) -> None:
    """Removes temp dirs of interrupted builds: only those carrying a build's marker whose process is gone
    (a user's `ROOT.tmp-anything` without it is never touched)."""
    for p in root.parent.glob(f"{root.name}.tmp-*"):
        try:
            pid = int((p / TMP_MARKER).read_text())
            os.kill(pid, 0)
        except (OSError, ValueError) as e:
            if isinstance(e, ProcessLookupError):
                shutil.rmtree(p, ignore_errors=True)


def matches(card: dict[str, Any], cfg: OrganismConfig) -> bool:
    # through JSON, as the card was written: tuples read back as lists
    return card.get("version") == BUILD_VERSION and card.get("config") == json.loads(json.dumps(cfg.to_dict()))


def build_or_load(cfg: OrganismConfig, root: str | Path, *, force: bool = False, progress: bool = True,
                  rebuild_stale: bool = False) -> Organism:
    """Returns the organism at `root` if it was built with `cfg`; builds it otherwise.

    Args:
        force: rebuild even if a matching organism is there.
        rebuild_stale: replace an organism built with other settings (True for the default cache dir);
            otherwise that raises RsearchError, so a user's directory is never replaced unasked.
    """
    root = check_out_dir(Path(root).expanduser().absolute())
    with _lock(root):
        _clean_stale_tmp(root)
        card_path = root / "card.json"
        if card_path.is_file() and not force:
            try:
                card = json.loads(card_path.read_text())
            except json.JSONDecodeError:
                card = {}
            if matches(card, cfg):
                problem = build_damage(root, card)
                if problem is None:
                    return Organism.at(root)
                # ours, with these settings: rebuilding replaces it with what it was (for a user's --out too)
                log.warning(f"{root} is a damaged organism build: {problem}; rebuilding it")
                return build(cfg, root, progress)
            if not rebuild_stale:
                raise RsearchError(f"{root} holds an organism built with other settings; pass --force to rebuild it")
            _say(progress, f"{root} was built with other settings; rebuilding")
        elif root.exists() and not card_path.is_file() and any(root.iterdir()):
            raise RsearchError(f"{root} exists and is not an organism; choose another --out")
        return build(cfg, root, progress)
