"""The catalogue of bad input: every case exits 2 with exactly one line on stderr, no traceback, no warning, no
progress bar before it, and writes nothing (not in --out, not beside it, not in the caches).

Cases run in-process through `rsearch.cli.main`; only those that need Ray or another process use subprocesses.
Models are the tiny random-init Llama of `tiny_search` and a tiny GPT-2 with a 64-position context.
"""
from __future__ import annotations

import collections
import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

import rsearch.activations as activations
import rsearch.jobs.train_probe as train_probe_job
from rsearch.cli import main
from rsearch.io_utils import LOCK_NAME, output_dir
from tiny import WORDS, feedback_records, tiny_tokenizer, write_jsonl

REPO = Path(__file__).resolve().parents[1]
GPT2_CONTEXT = 64


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rsearch-pwned",))


@pytest.fixture(scope="module")
def inputs(tiny_search, tmp_path_factory):
    """Every input file the cases point at, good and bad, in one folder."""
    model_dir, probe = tiny_search
    d = tmp_path_factory.mktemp("inputs")
    write_jsonl(d / "data.jsonl", feedback_records(40))
    (d / "empty.jsonl").write_text("")
    (d / "latin1.jsonl").write_bytes(json.dumps(feedback_records(1)[0]).replace("hello", "h\xe9llo")
                                     .encode("latin-1") + b"\n")
    rows = feedback_records(3)
    del rows[1]["chosen"][0]["content"]
    write_jsonl(d / "no_content.jsonl", rows)
    (d / "prefixes.txt").write_text("hello\n")
    # probe files: metadata d_model "abc", a pickle payload, junk bytes
    with safe_open(str(probe), framework="pt") as f:
        header, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(d / "abc.safetensors"), metadata={**header, "d_model": json.dumps("abc")})
    save_file(tensors, str(d / "bad_hook.safetensors"), metadata={**header, "hook": json.dumps("layer seven")})
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"header": _Evil(), "tensors": {}}, f)
    (d / "junk.pt").write_bytes(b"\x00junk")
    (d / "a_file").write_text("not a directory\n")
    (d / "bad.yaml").write_bytes(b"budget: \xff\xfe\n")
    # a "billion laughs": each level repeats the last nine times (a 1 KB file once became a 34 MB report.json)
    (d / "alias_bomb.yaml").write_text('a: &a ["x","x","x","x","x","x","x","x","x"]\n'
                                       'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                                       'demo:\n  search:\n    options: {beam: {width: *b}}\n')
    (d / "huge.yaml").write_text("demo:\n  seed: 1\n" + "# padding\n" * 120_000)
    (d / "unknown_strategy.yaml").write_text("demo:\n  search:\n    strategies: [random, beam, gcgg]\n")
    (d / "unknown_stage.yaml").write_text("demo:\n  stages: [nowhere.at_all:Stage]\n")
    rows = feedback_records(6)
    for r in rows:
        r["score_chosen"], r["score_rejected"] = r["score_rejected"] - 1, r["score_chosen"]
    write_jsonl(d / "inverted.jsonl", rows)
    rows = feedback_records(6)
    for r in rows:
        r["rejected"] = r["chosen"]
    write_jsonl(d / "identical.jsonl", rows)
    rows = feedback_records(6)
    rows[2]["score_rejected"] = True
    write_jsonl(d / "bool_score.jsonl", rows)
    (d / "empty_section.yaml").write_text("train_probe:\n")
    (d / "list_section.yaml").write_text("train_probe:\n  - max_train\n")
    (d / "list_subsection.yaml").write_text("demo:\n  compare: [1, 2]\n")
    (d / "not_utf8.txt").write_bytes(b"hello \xff\xfe\n")
    write_jsonl(d / "int_prefix.jsonl", [{"prefix": 5}])
    (d / "padded_template.yaml").write_text('template: "{lead:,>600} {task}"\nslots: {lead: ["", "hi"], '
                                            'task: ["what is 3 plus 5 ?"]}\n')
    # a model whose weights are a pickle with a payload (never executed: weights_only)
    pickled = d / "pickled_model"
    shutil.copytree(model_dir, pickled)
    state = {k: v for k, v in load_file(str(pickled / "model.safetensors")).items()}
    state["evil"] = _Evil()
    with open(pickled / "pytorch_model.bin", "wb") as f:
        pickle.dump(state, f, protocol=2)
    (pickled / "model.safetensors").unlink()
    # a GPT-2 with 64 positions, and rows far longer than that
    gpt2 = d / "gpt2"
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4,
                               n_positions=GPT2_CONTEXT)).save_pretrained(gpt2)
    tok.save_pretrained(gpt2)
    long_rows = feedback_records(12, seed=1)
    for r in long_rows:
        for key in ("chosen", "rejected"):
            r[key][-1]["content"] += " " + " ".join(WORDS * 4)
    write_jsonl(d / "long.jsonl", long_rows)
    return {"model": str(model_dir), "probe": str(probe), "dir": d, "gpt2": str(gpt2)}


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write to: mode 0555, and immutable when running as root (root ignores modes)."""
    d = tmp_path / "read_only"
    d.mkdir()
    d.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(d)], check=True)
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


def snapshot(*roots: Path) -> set[tuple[str, int]]:
    """Every path under the roots, with its size (a file rewritten in place changes it too)."""
    out = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                out.add((str(p), p.stat().st_size if p.is_file() else -1))
    return out


def train(w, out, *extra):
    args = ["train-probe", "--model", w["model"], "--dataset", str(w["dir"] / "data.jsonl"), "--out", str(out),
            "--hook", "blocks.1.hook_resid_pre", "--position", "completion_end"]
    return _override(args, extra)


def run(w, out, *extra):
    return _override(["run", "--probe", w["probe"], "--prefix", "hello", "--out", str(out), "--budget", "4"], extra)


def _override(args: list[str], extra: tuple[str, ...]) -> list[str]:
    """`args` with each flag in `extra` replacing the same flag's value (or added)."""
    args = list(args)
    extra = list(extra)
    i = 0
    while i < len(extra):
        flag = extra[i]
        has_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if flag in args:
            j = args.index(flag)
            if has_value:
                args[j + 1] = extra[i + 1]
            else:
                args.pop(j + 1)
                args.pop(j)
        if has_value:
            args += [flag, extra[i + 1]] if flag not in args else []
        i += 2 if has_value else 1
    return args


# (id, argv from (inputs, out dir, read-only dir), what the one line must say)
CASES = [
    # data
    ("empty-dataset", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "empty.jsonl")), "the file is empty"),
    ("non-utf8-dataset", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "latin1.jsonl")), "not UTF-8"),
    ("message-without-content", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "no_content.jsonl")),
     "needs a 'role' and a 'content'"),
    ("missing-dataset", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "nope.jsonl")),
     "dataset file not found"),
    ("non-utf8-config", lambda w, o, ro: train(w, o, "--config", str(w["dir"] / "bad.yaml")), "not UTF-8"),
    # flags
    ("batch-size-0", lambda w, o, ro: train(w, o, "--batch-size", "0"), "batch_size: must be at least 1"),
    ("max-train-negative", lambda w, o, ro: train(w, o, "--max-train", "-1"), "max_train: must be at least 1"),
    ("device-banana-train", lambda w, o, ro: train(w, o, "--device", "banana"), "unknown device 'banana'"),
    ("device-banana-run", lambda w, o, ro: run(w, o, "--device", "banana"), "unknown device 'banana'"),
    ("device-banana-compare", lambda w, o, ro: ["compare", "--device", "banana", "--out", str(o)],
     "unknown device 'banana'"),
    ("yaml-alias-bomb", lambda w, o, ro: ["demo", "--config", str(w["dir"] / "alias_bomb.yaml"), "--out", str(o)],
     "aliases (*a) are not allowed"),
    ("yaml-too-large", lambda w, o, ro: ["demo", "--config", str(w["dir"] / "huge.yaml"), "--out", str(o)],
     "too large for a config file"),
    ("demo-unknown-strategy", lambda w, o, ro: ["demo", "--config", str(w["dir"] / "unknown_strategy.yaml"),
                                                "--out", str(o)], "unknown strategy 'gcgg'"),
    ("demo-unknown-stage", lambda w, o, ro: ["demo", "--config", str(w["dir"] / "unknown_stage.yaml"),
                                             "--out", str(o)], "cannot import nowhere.at_all"),
    ("run-unknown-strategy-spec", lambda w, o, ro: run(w, o, "--strategy", "tests.toy:Nope"), "has no 'Nope'"),
    ("device-banana-demo", lambda w, o, ro: ["demo", "--device", "banana", "--out", str(o)],
     "unknown device 'banana'"),
    ("run-batch-size-0", lambda w, o, ro: run(w, o, "--batch-size", "0"), "--batch-size: must be at least 1"),
    ("hook-layer-missing", lambda w, o, ro: train(w, o, "--hook", "blocks.9.hook_resid_pre"),
     "hook point blocks.9.hook_resid_pre does not exist"),
    ("too-long-choice", lambda w, o, ro: train(w, o, "--too-long", "wrap"), "invalid choice"),
    ("dtype-unknown", lambda w, o, ro: run(w, o, "--dtype", "float8"), "unknown dtype"),
    ("ray-timeout-0", lambda w, o, ro: run(w, o, "--ray-timeout", "0"), "--ray-timeout must be positive"),
    # probe files
    ("probe-d_model-abc", lambda w, o, ro: run(w, o, "--probe", str(w["dir"] / "abc.safetensors")),
     "probe metadata 'd_model' is 'abc'"),
    ("probe-bad-hook", lambda w, o, ro: run(w, o, "--probe", str(w["dir"] / "bad_hook.safetensors")),
     "unknown hook point"),
    ("probe-pickle-payload", lambda w, o, ro: run(w, o, "--probe", str(w["dir"] / "evil.pt")),
     "refused: the file holds pickled objects"),
    ("probe-junk", lambda w, o, ro: run(w, o, "--probe", str(w["dir"] / "junk.pt")), "junk.pt"),
    # output folders
    ("out-is-a-file-train", lambda w, o, ro: train(w, w["dir"] / "a_file"), "exists and is not a directory"),
    ("out-is-a-file-run", lambda w, o, ro: run(w, w["dir"] / "a_file"), "exists and is not a directory"),
    ("out-under-a-file-train", lambda w, o, ro: train(w, w["dir"] / "a_file" / "sub"), "is a file"),
    ("out-under-a-file-run", lambda w, o, ro: run(w, w["dir"] / "a_file" / "sub"), "is a file"),
    ("out-read-only-train", lambda w, o, ro: train(w, ro), "is not writable"),
    ("out-read-only-run", lambda w, o, ro: run(w, ro / "sub"), "is not writable"),
    ("out-is-a-file-organism", lambda w, o, ro: ["organism", "build", "--size", "tiny", "--out",
                                                 str(w["dir"] / "a_file")], "exists and is not a directory"),
    # round three (issue 23, items 8 and 9)
    ("scores-all-inverted", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "inverted.jsonl")),
     "every row scores its chosen completion below its rejected one"),
    ("chosen-identical-to-rejected", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "identical.jsonl")),
     "every row's chosen completion is identical to its rejected one"),
    ("score-a-bool", lambda w, o, ro: train(w, o, "--dataset", str(w["dir"] / "bool_score.jsonl")),
     "row 2 has a score that is not a finite number"),
    ("yaml-empty-section", lambda w, o, ro: train(w, o, "--config", str(w["dir"] / "empty_section.yaml")),
     "section 'train_probe' is empty"),
    ("yaml-list-section", lambda w, o, ro: train(w, o, "--config", str(w["dir"] / "list_section.yaml")),
     "section 'train_probe' must be a mapping of settings, got a list"),
    ("yaml-list-subsection", lambda w, o, ro: ["demo", "--config", str(w["dir"] / "list_subsection.yaml"),
                                               "--out", str(o)], "demo.compare: expected a mapping"),
    ("alphas-nan", lambda w, o, ro: ["steer", "--probe", w["probe"], "--alphas=-1,0,nan", "--out", str(o)],
     "steer.alphas: must be a finite number, got 'nan'"),
    ("alphas-inf", lambda w, o, ro: ["steer", "--probe", w["probe"], "--alphas=-inf,0,1", "--out", str(o)],
     "must be a finite number, got '-inf'"),
    ("alphas-duplicate", lambda w, o, ro: ["steer", "--probe", w["probe"], "--alphas=-1,0,1,1", "--out", str(o)],
     "alphas: give each strength once"),
    ("optuna-template-format-spec", lambda w, o, ro: run(w, o, "--strategy", "optuna", "--set",
                                                        f"template={w['dir'] / 'padded_template.yaml'}"),
     "has a format spec or conversion (use {lead})"),
    ("set-temperature-inf", lambda w, o, ro: run(w, o, "--set", "temperature=inf"),
     "beam.temperature: must be a finite number"),
    ("set-int-overflow", lambda w, o, ro: run(w, o, "--set", "width=1e999"), "beam.width: expected int"),
    ("prefixes-not-utf8", lambda w, o, ro: run(w, o, "--prefixes", str(w["dir"] / "not_utf8.txt")), "not UTF-8"),
    ("prefixes-non-string", lambda w, o, ro: run(w, o, "--prefixes", str(w["dir"] / "int_prefix.jsonl")),
     "expected a JSON object with a 'prefix' string"),
    ("model-weights-pickled", lambda w, o, ro: train(w, o, "--model", str(w["dir"] / "pickled_model")),
     "its weights are a pickle holding more than tensors"),
    # context length
    ("prefix-longer-than-context", lambda w, o, ro: run(w, o, "--prefix", "hello " * 25_000),
     "no room left in the model's context of 128"),
    ("rows-longer-than-context-dropped", lambda w, o, ro: train(
        w, o, "--model", w["gpt2"], "--dataset", str(w["dir"] / "long.jsonl"), "--too-long", "drop"),
     f"longer than {GPT2_CONTEXT} tokens"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case, inputs, tmp_path, read_only_dir, capsys):
    _, argv_of, message = case
    out = tmp_path / "out"
    argv = argv_of(inputs, out, read_only_dir)
    watched = (tmp_path, inputs["dir"], Path(os.environ["RSEARCH_HOME"]))
    before = snapshot(*watched)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith("rsearch: error: ") and "Traceback" not in err
    assert not [str(w.message) for w in caught]
    assert snapshot(*watched) == before
    assert not Path("/tmp/rsearch-pwned").exists()


def test_the_catalogue_covers_every_command_with_an_out_folder():
    flags = {c[0].rsplit("-", 1)[-1] for c in CASES if c[0].startswith(("out-", "device-banana-"))}
    assert {"train", "run", "compare", "demo", "organism"} <= flags


def test_truncate_keeps_rows_within_the_context_and_counts_them(inputs, tmp_path, capsys):
    """--too-long truncate cuts the prompt from the left: no row past GPT-2's 64 positions, the count logged."""
    from rsearch.chat import encode_conversation, fit_length
    from rsearch.data import pairs_from_records

    tok = tiny_tokenizer()
    pair = pairs_from_records(feedback_records(1))[0]
    row = encode_conversation(tok, list(pair.prompt) * 8, pair.chosen)  # a long prompt, a short completion
    cut = fit_length(row, 20, "truncate")
    assert len(row) > 20 and len(cut) == 20 and cut.ids == row.ids[-20:]
    assert cut.ids[cut.completion[0]:cut.completion[1]] == row.ids[row.completion[0]:row.completion[1]]
    assert cut.ids[cut.user_end] == row.ids[row.user_end]
    assert fit_length(row, 20, "drop") is None
    assert fit_length(row, len(row.ids[row.user_end:]) - 1, "truncate") is None  # the completion cannot fit

    # the job: rows with long prompts on a 64-position GPT-2, truncated and counted, then trained on
    long_prompts = feedback_records(40, seed=2)
    for r in long_prompts:
        r["prompt"] = " ".join(["hello"] * 70)
        for key in ("chosen", "rejected"):
            r[key][0]["content"] = r["prompt"]
    write_jsonl(tmp_path / "long_prompts.jsonl", long_prompts)
    store = tmp_path / "store"
    code = main(train(inputs, tmp_path / "out", "--model", inputs["gpt2"], "--dataset",
                      str(tmp_path / "long_prompts.jsonl"), "--too-long", "truncate", "--store-dir", str(store),
                      "--hook", "blocks.1.hook_resid_pre", "--max-epochs", "3"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "0 of" in err and "truncated from the left of the prompt" in err
    meta = json.loads(next(store.glob("*/meta.json")).read_text())
    assert meta["n_rows"] > 0


def test_second_run_on_the_same_out_fails_fast_naming_the_holder(inputs, tmp_path, capsys):
    out = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rsearch.io_utils import output_dir\n"
         f"with output_dir({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        code = main(run(inputs, out))
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"in use by another rsearch process (pid {holder.pid})" in err
        assert time.perf_counter() - t0 < 30
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the second run
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its stale lock is taken over, and removed at the end
    assert (out / LOCK_NAME).exists()
    assert main(run(inputs, out, "--quiet")) == 0
    assert (out / "results.jsonl").read_text().count("\n") == 1
    assert not (out / LOCK_NAME).exists()


def test_lock_in_the_same_process_is_refused_too(inputs, tmp_path, capsys):
    out = tmp_path / "held"
    with output_dir(out):
        assert main(run(inputs, out)) == 2
    assert f"(pid {os.getpid()})" in capsys.readouterr().err
    assert not out.exists()  # created by the holder, empty at its end: removed


def test_organism_build_deletes_only_what_it_created(tmp_path, capsys):
    target = tmp_path / "tiny-seed0"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")  # not an organism: the build is refused
    keep = tmp_path / "tiny-seed0.tmp-keepme"
    keep.mkdir()
    (keep / "precious.txt").write_text("keep me\n")
    stale = tmp_path / "tiny-seed0.tmp-999999999-abc"  # a build's own temp dir, its builder gone
    stale.mkdir()
    (stale / ".rsearch-build").write_text("999999999\n")
    assert main(["organism", "build", "--size", "tiny", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists and is not an organism" in err
    assert (keep / "precious.txt").read_text() == "keep me\n"
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-seed0", "tiny-seed0.tmp-keepme"]  # no lock left


def _cli(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rsearch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - t0


def test_ray_address_with_nothing_listening_fails_at_once(inputs, tmp_path):
    proc, seconds = _cli(*run(inputs, tmp_path / "out", "--ray-address", "127.0.0.1:1"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "cannot join the Ray cluster at '127.0.0.1:1': nothing answers there" in lines[0]
    assert seconds < 120  # interpreter and imports on a loaded machine; it used to retry for over 10 minutes
    assert not (tmp_path / "out").exists()


def test_joining_a_silent_address_gives_up_after_the_timeout():
    """Something accepts connections there but never answers as Ray: refused after --ray-timeout seconds."""
    from rsearch.distributed import join_ray
    from rsearch.errors import RsearchError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never speaks gRPC
    try:
        t0 = time.perf_counter()
        with pytest.raises(RsearchError, match="no answer within 3 s"):
            join_ray(f"127.0.0.1:{silent.getsockname()[1]}", timeout=3)
        assert time.perf_counter() - t0 < 3 + 5  # the timeout, then killing the probe (a busy machine)
        t0 = time.perf_counter()
        with pytest.raises(RsearchError, match="nothing answers there"):
            join_ray("127.0.0.1:1", timeout=3)
        assert time.perf_counter() - t0 < 2
    finally:
        silent.close()


def test_organism_build_leaves_only_the_organism(tmp_path, monkeypatch):
    """A build (its training stubbed: this checks the folder handling) renames its own temp dir into place and
    leaves neither its marker, nor a temp dir, nor its lock; a failed build removes only its own temp dir."""
    from rsearch.organism import build as B
    from rsearch.organism.config import OrganismConfig

    def fake_build(cfg, root, progress):
        card = {"build_seconds": 0.0, "config": cfg.to_dict()}
        (root / "card.json").write_text(json.dumps(card))
        return card

    keep = tmp_path / "org.tmp-keepme"
    keep.mkdir()
    monkeypatch.setattr(B, "_build_into", fake_build)
    B.build_or_load(OrganismConfig.preset("tiny", 0), tmp_path / "org")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["org", "org.tmp-keepme"]
    assert sorted(p.name for p in (tmp_path / "org").iterdir()) == ["card.json"]

    def failing_build(cfg, root, progress):
        raise RuntimeError("stopped")

    monkeypatch.setattr(B, "_build_into", failing_build)
    with pytest.raises(RuntimeError):
        B.build_or_load(OrganismConfig.preset("tiny", 0), tmp_path / "org2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["org", "org.tmp-keepme"]


def test_a_store_the_disk_cannot_hold_is_one_line_before_a_row_is_read(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(activations.shutil, "disk_usage", lambda p: collections.namedtuple(
        "usage", "total used free")(10**6, 10**6 - 1000, 1000))
    assert main(train(inputs, tmp_path / "out", "--store-dir", str(tmp_path / "store"))) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rsearch:")]
    assert len(err) == 1 and "bytes free on that disk" in err[0]
    assert not any(p.suffix == ".npy" for p in (tmp_path / "store").rglob("*"))  # nothing left that looks started


def test_a_full_disk_while_writing_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "metrics.csv"))

    monkeypatch.setattr(train_probe_job, "write_metrics", full)
    assert main(train(inputs, tmp_path / "out")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rsearch:")]
    assert len(err) == 1 and err[0].startswith("rsearch: error: No space left on device writing ")
