"""`rsearch rate`: re-rate a feedback dataset (ultrafeedback_binarized schema) with another rater, so probes can be
trained on better labels.

Every row's chosen and rejected completions are scored by the rater (`rsearch.raters`: a local reward model
directory or `module.path:callable`); the new scores replace score_chosen / score_rejected (the old ones are kept
as score_chosen_original / score_rejected_original), and where the new rater prefers the rejected completion the
two sides swap — every column pair `X_chosen` / `X_rejected`, the `messages` column (the chosen conversation) with
them — and the row says `swapped: true`. Ties keep the old order.

The dataset is a JSONL/parquet file or a directory of `{split}.jsonl`/`.parquet` files (as `rsearch.data` loads
them); the output is a directory of `{split}.jsonl`. Rows are rated in batches appended to a hidden partial file
beside the output, so an interrupted run resumes where it stopped; each split's file appears, complete, only at
the end (written to a temp file, then renamed). `rate.json` summarises what changed.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsearch.config import Config, add_config_arguments, check, config_from_args, setting
from rsearch.errors import RsearchError
from rsearch.io_utils import atomic_path, read_jsonl, write_json
from rsearch.log import show_progress
from rsearch.raters import check_spec, load_rater
from rsearch.data import load_records, pairs_from_records

log = logging.getLogger("rsearch.rate")
SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class RateConfig(Config):
    """Settings of `rsearch rate`; each field's help is its flag's."""

    rater: str = setting("", help="a local reward model directory, module.path:callable "
                         "(rater(prompt, completion) -> float), organism, or judge:MODEL[?rubric=FILE&...] (a judge "
                         "model at the OpenAI-compatible $RSEARCH_JUDGE_URL, key $RSEARCH_JUDGE_API_KEY)")
    dataset: str = setting("", help="JSONL/parquet file, or a directory of {split}.jsonl/.parquet files")
    out: str = setting("", help="output directory ({split}.jsonl per split, rate.json)")
    splits: tuple[str, ...] = setting((), help="splits of a dataset directory to rate (default: every file)")
    batch_size: int = setting(32, help="rows per rater call (each row: chosen and rejected)")
    dtype: str = setting("float32", help="reward model dtype")
    device: str = setting("auto", runtime=True)
    trust_remote_code: bool = setting(False, help="run the reward model repository's own code (only on request)")

    def __post_init__(self) -> None:
        check(bool(self.rater), "rater: give --rater (a reward model directory, module.path:callable or "
              "judge:MODEL)")
        check(self.rater not in ("auto", "none"), f"rater: {self.rater} names no rater to rate with")
        check_spec(self.rater)
        check(bool(self.dataset), "dataset: give --dataset (a file or a directory of split files)")
        check(bool(self.out), "out: give --out (the output directory)")
        check(self.batch_size >= 1, "batch_size: must be at least 1")


def split_files(dataset: str, splits: tuple[str, ...]) -> dict[str, Path]:
    """{split name: file} of the dataset: one file (its stem), or a directory's split files."""
    p = Path(dataset).expanduser()
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise RsearchError(f"{p}: unsupported file type (use .jsonl, .json or .parquet)")
        files = {p.stem: p}
    elif p.is_dir():
        files = {f.stem: f for f in sorted(p.iterdir()) if f.suffix in SUFFIXES and not f.name.startswith(".")}
    else:
        raise RsearchError(f"dataset not found: {dataset} (rate reads local files)")
    if splits:
        missing = [s for s in splits if s not in files]
        if missing:
            raise RsearchError(f"{dataset}: no file for split {missing[0]!r} (found: {', '.join(files) or 'none'})")
        files = {s: files[s] for s in splits}
    if not files:
        raise RsearchError(f"{dataset}: no .jsonl/.json/.parquet split files")
    return files


def rerated(record: dict[str, Any], score_chosen: float, score_rejected: float) -> dict[str, Any]:
    """The row with the new scores, its sides swapped where the new rater prefers the rejected completion."""
    row = dict(record)
    row["score_chosen_original"], row["score_rejected_original"] = record["score_chosen"], record["score_rejected"]
    row["score_chosen"], row["score_rejected"] = float(score_chosen), float(score_rejected)
    swap = score_rejected > score_chosen
    if swap:
        for key in [k for k in row if k.endswith("chosen") and k[:-6] + "rejected" in row]:
            other = key[:-6] + "rejected"
            row[key], row[other] = row[other], row[key]
        if "messages" in row:
            row["messages"] = row["chosen"]
    row["swapped"] = swap
    return row


def rate_split(rater, name: str, source: Path, out: Path, cfg: RateConfig) -> dict[str, Any]:
    """Rates one split file into out/{name}.jsonl, resuming from its partial file; returns its summary."""
    from tqdm.auto import tqdm

    records = load_records(str(source), None)
    pairs = pairs_from_records(records, str(source), as_preferences=False)  # every row re-rated, in place
    final = out / f"{name}.jsonl"
    partial, stamp = out / f".{name}.jsonl.partial", out / f".{name}.partial.json"
    identity = {"rater": cfg.rater, "source": str(source.resolve()), "rows": len(records),
                "size": source.stat().st_size, "mtime": source.stat().st_mtime_ns}
    if not stamp.is_file() or json.loads(stamp.read_text()) != identity:
        partial.unlink(missing_ok=True)  # another rater or source: start over
        write_json(stamp, identity)
    done = read_jsonl(partial)
    if len(done) > len(records):
        raise RsearchError(f"{partial}: holds more rows than {source}; delete it to start over")
    _truncate_to(partial, done)
    bar = tqdm(total=len(records), initial=len(done), desc=f"rate {name}", unit="row", disable=not show_progress())
    with open(partial, "a") as f:
        for start in range(len(done), len(records), cfg.batch_size):
            batch = range(start, min(start + cfg.batch_size, len(records)))
            prompts = [list(pairs[i].prompt) for i in batch]
            scores = rater.rate(prompts * 2, [pairs[i].chosen for i in batch] + [pairs[i].rejected for i in batch])
            n = len(batch)
            for j, i in enumerate(batch):
                f.write(json.dumps(rerated(records[i], scores[j], scores[n + j]), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(n)
    bar.close()
    rows = read_jsonl(partial)
    with atomic_path(final) as tmp:
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    partial.unlink()
    stamp.unlink()
    swapped = sum(bool(r["swapped"]) for r in rows)
    return {"split": name, "source": str(source), "rows": len(rows), "swapped": swapped,
            "agreement_with_original": 1 - swapped / len(rows) if rows else float("nan"),
            "resumed_from_row": len(done)}


def _truncate_to(partial: Path, rows: list) -> None:
    """Drops a torn last line (a crash mid-write) so appends start on a clean line."""
    if partial.exists():
        with atomic_path(partial) as tmp:
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))


def run_rate(cfg: RateConfig) -> dict[str, Any]:
    """Rates every split (see the module docstring); writes out/{split}.jsonl and out/rate.json."""
    files = split_files(cfg.dataset, cfg.splits)
    out = Path(cfg.out).expanduser()
    if out.resolve() == Path(cfg.dataset).expanduser().resolve():
        raise RsearchError("out: must differ from the dataset (rate never overwrites its input)")
    rater = load_rater(cfg.rater, device=cfg.device, dtype=cfg.dtype, batch_size=2 * cfg.batch_size,
                       trust_remote_code=cfg.trust_remote_code)  # first: a rater that fails to load writes nothing
    out.mkdir(parents=True, exist_ok=True)
    summary = {"rater": cfg.rater, "dataset": cfg.dataset,
               "splits": [rate_split(rater, name, f, out, cfg) for name, f in files.items()]}
    write_json(out / "rate.json", summary)
    return summary


def add_arguments(parser) -> None:
    add_config_arguments(parser, RateConfig, config_file="YAML file (top-level keys, or a `rate:` section)")


def main(args) -> int:
    cfg = config_from_args(args, RateConfig, "rate")
    summary = run_rate(cfg)
    for s in summary["splits"]:
        print(f"{s['split']}: {s['rows']} rows, {s['swapped']} swapped (the new rater agrees with the old order on "
              f"{s['agreement_with_original']:.1%})")
    print(f"→ {Path(cfg.out) / 'rate.json'}")
    return 0
