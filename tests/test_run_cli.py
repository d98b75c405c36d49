"""`rsearch run`: a table, streamed results, a plot; resume after a killed process; one-line errors, exit 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from rsearch.probes import make_probe, save_probe
from rsearch.cli import main

REPO = Path(__file__).resolve().parents[1]


def base_args(probe, out, *extra):
    return ["run", "--probe", str(probe), "--out", str(out), "--quiet", *extra]


def test_run_prints_table_streams_results_and_plots(tiny_search, tmp_path, capsys):
    _, probe = tiny_search
    code = main(base_args(probe, tmp_path / "r", "--strategy", "beam", "--prefix", "what is", "--budget", "16",
                          "--set", "width=2", "--set", "branching=2", "--set", "chunk=2", "--top-k", "3"))
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["#", "score", "probe", "logprob"] and len(out.splitlines()) == 4
    assert "'what is" in out
    lines = (tmp_path / "r" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["result"]["evaluations"] == 16
    png = tmp_path / "r" / "best_so_far_beam.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "r" / "run.json").read_text())["strategy_options"] == {
        "width": 2, "branching": 2, "chunk": 2}
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_prefixes"] == 1
    # the same out dir again without --resume is refused; with it, nothing is redone
    assert main(base_args(probe, tmp_path / "r", "--strategy", "beam", "--prefix", "what is", "--budget", "16",
                          "--set", "width=2", "--set", "branching=2", "--set", "chunk=2")) == 2
    assert "--resume" in capsys.readouterr().err


def test_options_file_and_other_strategies(tiny_search, tmp_path, capsys):
    _, probe = tiny_search
    opts = tmp_path / "opts.yaml"
    opts.write_text("gcg:\n  n_tokens: 3\n  search_width: 8\n  topk: 4\nbeam:\n  width: 9\n")
    assert main(base_args(probe, tmp_path / "g", "--strategy", "gcg", "--prefix", "hello", "--budget", "10",
                          "--options", str(opts), "--target", "completion")) == 0
    assert json.loads((tmp_path / "g" / "run.json").read_text())["strategy_options"]["n_tokens"] == 3
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("what is\n\nhello\n")
    assert main(base_args(probe, tmp_path / "rnd", "--strategy", "random", "--prefixes", str(prefixes),
                          "--budget", "6", "--set", "batch=3", "--set", "max_tokens=3",
                          "--logprob-weight", "0.1")) == 0
    assert len((tmp_path / "rnd" / "results.jsonl").read_text().splitlines()) == 2


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_search, tmp_path):
    _, probe = tiny_search
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("\n".join(["what is", "hello", "list some", "please repeat", "the answer", "thank you"]))
    common = ["--strategy", "beam", "--prefixes", str(prefixes), "--budget", "48", "--set", "width=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from rsearch.cli import main; "
           "sys.exit(main(sys.argv[1:]))"]
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(cmd + base_args(probe, crashed, *common), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = crashed / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = results.read_text().count("\n")
    assert main(base_args(probe, crashed, *common, "--resume")) == 0
    assert main(base_args(probe, tmp_path / "full", *common)) == 0

    def load(d):
        return {json.loads(x)["index"]: json.loads(x)["result"] for x in (d / "results.jsonl").read_text().splitlines()}

    a, b = load(crashed), load(tmp_path / "full")
    assert len((crashed / "results.jsonl").read_text().splitlines()) == 6  # none lost, none twice
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert {i: strip(r) for i, r in a.items()} == {i: strip(r) for i, r in b.items()}
    assert n_before < 6 or proc.returncode == 0
    # resuming with other settings is refused
    assert main(base_args(probe, crashed, "--strategy", "beam", "--prefixes", str(prefixes), "--budget", "40",
                          "--set", "width=2", "--resume")) == 2


def test_bad_input_one_line_exit_2(tiny_search, tmp_path, capsys):
    model_dir, probe = tiny_search
    bad_tmpl = tmp_path / "bad.yaml"
    bad_tmpl.write_text('template: "{a} {b}"\nslots:\n  a: ["hello"]\n')
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00junk")
    other = tmp_path / "other.pt"
    save_probe(other, make_probe("linear", 48), {"model": str(model_dir), "hook": "blocks.1.hook_resid_pre"})
    cases = [
        (["--strategy", "annealing"], "unknown strategy 'annealing'"),
        (["--set", "widht=3"], "unknown option 'widht'"),
        (["--set", "width"], "expected KEY=VALUE"),
        (["--strategy", "optuna", "--set", f"template={bad_tmpl}"], "has no slot"),
        (["--prefix", " "], "empty prefix"),
        (["--budget", "0"], "budget must be positive"),
        (["--budget", "-5"], "budget must be positive"),
        (["--probe", str(junk)], "junk.pt"),
        (["--probe", str(tmp_path / "missing.pt")], "probe file not found"),
        (["--probe", str(other)], "different model"),
        (["--target", "answer"], "invalid choice"),
        (["--position", "middle"], "unknown position"),
    ]
    for extra, message in cases:
        args = ["run", "--probe", str(probe), "--prefix", "hello", "--out", str(tmp_path / "x"), "--quiet"]
        if "--prefix" in extra:
            args.remove("--prefix"), args.remove("hello")
        if "--probe" in extra:
            args.remove("--probe"), args.remove(str(probe))
        code = main(args + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, (extra, err)
