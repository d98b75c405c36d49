import json
import subprocess
import sys

import pytest

from rsearch.probes import load_probe
from rsearch.cli import main
from rsearch.jobs.train_probe import TrainProbeConfig, train_probes
from tiny import feedback_records, save_tiny_model, write_jsonl


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    root = tmp_path_factory.mktemp("subjects")
    save_tiny_model(root / "model", arch="llama", n_layers=3, d_model=32)
    write_jsonl(root / "fb.jsonl", feedback_records(240))
    return root


def test_sweep_writes_table_heatmap_and_a_probe_that_reads_reward(subjects, tmp_path):
    cfg = TrainProbeConfig(model=str(subjects / "model"), dataset=str(subjects / "fb.jsonl"), sweep=True,
                           positions=("user_end", "completion_mean", "-1"), out=str(tmp_path / "out"),
                           store_dir=str(tmp_path / "store"))
    result = train_probes(cfg)
    assert len(result.rows) == 3 * 3
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000
    table = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(table["rows"]) == 9
    by_pos = {(r.layer, r.position): r for r in result.rows}
    assert all(by_pos[(L, "user_end")].objective == "regression" for L in range(3))
    # the rating depends on words of the completion: the mean over completion tokens reads it, the shuffled control does not
    best_mean = max(by_pos[(L, "completion_mean")].test["pairwise_acc"] for L in range(3))
    assert best_mean > 0.75
    assert abs(by_pos[(2, "completion_mean")].shuffled_control["pairwise_acc"] - 0.5) < 0.2
    probe, meta = load_probe(tmp_path / "out" / "best_probe.safetensors")
    assert meta["hook"] == result.best.hook and meta["position"] == result.best.position
    assert meta["d_model"] == 32 and meta["model"] == str(subjects / "model")


def test_cli_single_probe_and_bad_input(subjects, tmp_path, capsys):
    args = ["train-probe", "--model", str(subjects / "model"), "--dataset", str(subjects / "fb.jsonl"),
            "--hook", "1.resid_post", "--position", "completion_mean", "--out", str(tmp_path / "one")]
    assert main(args) == 0
    assert (tmp_path / "one" / "best_probe.safetensors").exists()
    assert main(args[:-2] + ["--hook", "blocks.9.hook_resid_pre", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rsearch: error: hook point blocks.9.hook_resid_pre does not exist")
    assert not (tmp_path / "bad" / "best_probe.safetensors").exists()


def test_cli_exit_code_2_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rsearch.cli", "train-probe", "--dataset", str(tmp_path / "x.jsonl"),
                           "--model", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
