"""`rsearch run`: a table, streamed results, a plot; resume after a killed process; one-line errors, exit 2."""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
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


def test_a_strategy_from_outside_the_package_runs_from_the_command_line(tiny_search, tmp_path):
    """`rsearch run --strategy tests.toy:Toy`, as a user types it in the repository (the console script, whose
    sys.path does not hold the current directory), with the strategy's own option checked by its Config."""
    _, probe = tiny_search
    exe = Path(sys.executable).with_name("rsearch")
    args = [str(exe), *base_args(probe, tmp_path / "toy", "--strategy", "tests.toy:Toy", "--prefix", "what is",
                                 "--budget", "8", "--set", "width=2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = (tmp_path / "toy" / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["result"]["evaluations"] == 8
    assert (tmp_path / "toy" / "best_so_far_tests.toy_Toy.png").is_file()
    bad = subprocess.run(args[:-1] + ["width=0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "rsearch: error: toy.width: must be at least 1, got 0"


def test_run_takes_a_config_file_and_refuses_a_probe_a_prompt_search_cannot_read(tiny_search, tmp_path, capsys):
    """`--config` like every job (flags win over the file); a probe trained at -1 (the answer's end) is refused by a
    prompt search before anything is written, unless --position says where to read it."""
    from rsearch.probes import load_probe, save_probe

    _, probe = tiny_search
    cfg = tmp_path / "run.yaml"
    cfg.write_text("run:\n  strategy: random\n  budget: 6\n  logprob_weight: 0.0\n")
    assert main(base_args(probe, tmp_path / "c", "--config", str(cfg), "--prefix", "what is", "--budget", "4")) == 0
    saved = json.loads((tmp_path / "c" / "run.json").read_text())
    assert (saved["strategy"], saved["budget"], saved["logprob_weight"]) == ("random", 4, 0.0)
    answer_end = tmp_path / "answer_end.safetensors"
    p, meta = load_probe(probe)
    save_probe(answer_end, p, {**meta, "position": "-1"})
    capsys.readouterr()
    assert main(base_args(answer_end, tmp_path / "d", "--config", str(cfg), "--prefix", "what is")) == 2
    err = capsys.readouterr().err.strip()
    assert "trained at position -1, which a prompt search cannot read" in err and "\n" not in err
    assert not (tmp_path / "d").exists()
    assert main(base_args(answer_end, tmp_path / "e", "--config", str(cfg), "--prefix", "what is",
                          "--position", "user_end")) == 0


def rate_words(prompt, completion: str) -> float:
    """A rater for `run --rater` (test_run_cli:rate_words): the answer's word count."""
    return float(len(completion.split()))


def test_run_checks_what_it_found_against_a_rater(tiny_search, tmp_path, capsys):
    _, probe = tiny_search
    out = tmp_path / "r"
    assert main(base_args(probe, out, "--strategy", "random", "--prefix", "what is", "--prefix", "hello",
                          "--budget", "4", "--rater", "test_run_cli:rate_words", "--check-samples", "2",
                          "--max-new-tokens", "4")) == 0
    assert "true reward (test_run_cli:rate_words): found" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rater"] == "test_run_cli:rate_words" and summary["true_reward"]["n_prompts"] == 2
    assert all(1 <= r["true_reward"] <= 4 and 1 <= r["true_reward_bare_prefix"] <= 4 for r in summary["results"])
    assert main(base_args(probe, tmp_path / "bad", "--rater", "no/such/dir")) == 2
    assert not (tmp_path / "bad").exists()


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
    assert proc.returncode == -signal.SIGKILL and n_before < 6  # the kill interrupted the run
    # resuming with other settings is refused
    assert main(base_args(probe, crashed, "--strategy", "beam", "--prefixes", str(prefixes), "--budget", "40",
                          "--set", "width=2", "--resume")) == 2


def _started(cmd_args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    # SIGINT as a terminal gives it, even when this test runs in a background job (which ignores SIGINT, and a
    # child inherits that)
    return subprocess.Popen([sys.executable, "-m", "rsearch.cli", *cmd_args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_results(proc, results: Path, n: int, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} results within {seconds} s (exit {proc.poll()}): {proc.stderr.read()}")


def _stop(proc, sig) -> float:
    """Sends `sig`; the seconds until the process has exited."""
    t0 = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return time.perf_counter() - t0


def test_sigterm_stops_within_5s_and_the_hint_resumes(tiny_search, tmp_path, capsys):
    _, probe = tiny_search
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("\n".join(["what is", "hello", "list some", "please repeat", "the answer", "thank you"]))
    out = tmp_path / "term"
    args = ["run", "--probe", str(probe), "--out", str(out), "--strategy", "beam", "--prefixes", str(prefixes),
            "--budget", "300", "--set", "width=2", "--position", "user_end", "-q"]
    proc = _started(args)
    _wait_for_results(proc, out / "results.jsonl", 1)
    seconds = _stop(proc, signal.SIGTERM)
    err = proc.stderr.read().strip()
    assert proc.returncode == 143 and seconds < 5, (proc.returncode, seconds, err)
    n_before = (out / "results.jsonl").read_text().count("\n")
    assert 1 <= n_before < 6  # the signal interrupted the run, and every finished result is on disk
    assert len(err.splitlines()) == 1 and "terminated" in err
    hint = err.split("To continue: ", 1)[1]
    assert hint == shlex.join(["rsearch", *args, "--resume"])
    assert not (out / ".rsearch.lock").exists()
    # the named command works and finishes the run, nothing redone or lost
    assert main(shlex.split(hint)[1:]) == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(6))


def _listening_sockets() -> dict[int, str]:
    """{socket inode: local ip} of every listening TCP socket (/proc/net/tcp and tcp6)."""
    out = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host-endian
            out[int(fields[9])] = socket.inet_ntop(family, raw)
    return out


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _listening_ips(pids: list[int]) -> list[str]:
    listening = _listening_sockets()
    ips = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in listening:
                ips.append(listening[int(link[8:-1])])
    return ips


def test_local_ray_run_listens_on_loopback_only_and_stops_on_ctrl_c(tiny_search, tmp_path):
    _, probe = tiny_search
    prefixes = tmp_path / "prefixes.txt"
    # enough prefixes (512) that the run is still going when Ctrl-C comes, however idle the machine
    words = ("two", "five", "the", "cat", "dog", "bird", "nice", "good")
    leads = ("please ,", "hey ,", "hi !", "thanks .", "please , hey ,", "hi ! please ,", "hey , hi !", "thanks . hey ,")
    prefixes.write_text("\n".join(f"{lead} what is {w} {v}" for lead in leads for w in words for v in words))
    out = tmp_path / "ray"
    proc = _started(["run", "--probe", str(probe), "--out", str(out), "--strategy", "beam", "--prefixes",
                     str(prefixes), "--budget", "200", "--set", "width=2", "--workers", "2", "-q"])
    _wait_for_results(proc, out / "results.jsonl", 1)
    tree = _process_tree(proc.pid)
    ips = _listening_ips(tree)
    assert len(tree) > 3 and len(ips) >= 3, (tree, ips)  # the raylet, GCS and workers listen
    assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip in ips), ips
    seconds = _stop(proc, signal.SIGINT)
    err = proc.stderr.read().strip()
    assert proc.returncode == 130 and seconds < 5, (proc.returncode, seconds, err)
    assert "interrupted" in err.splitlines()[-1] and "--resume" in err.splitlines()[-1]
    n = (out / "results.jsonl").read_text().count("\n")
    assert 1 <= n < 512

    def ray_left() -> list[str]:
        left = []
        for p in tree:
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            except OSError:
                continue
            if p != proc.pid and b"ray" in cmd:
                left.append(cmd.replace(b"\0", b" ").decode()[:120])
        return left

    deadline = time.time() + 15
    while ray_left() and time.time() < deadline:
        time.sleep(0.2)
    assert not ray_left()  # every Ray process of the run is gone


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
        (["--prefix", " "], "whitespace-only prefix"),
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
