"""The card's commands as written, through the CLI on the tiny organism: `train-probe … --save layer24.pt` writes
the chosen probe to that file, and `rsearch run --strategy beam --probe layer24.pt` (no prefix) searches from the
start of the user's message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsearch.cli import main
from rsearch.probes import load_probe

TRAIN = ["train-probe", "--organism-size", "tiny", "--max-train", "200", "--max-test", "40", "--quiet"]


def _same_probe(a: Path, b: Path) -> None:
    (pa, ma), (pb, mb) = load_probe(a), load_probe(b)
    assert ma == mb
    sa, sb = pa.state_dict(), pb.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_probe_save_then_run_with_no_prefix(tiny_organism, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # a small sweep; --save names where the chosen probe goes, in the format its suffix names
    assert main(TRAIN + ["--sweep", "--layers", "1", "--positions=-1,completion_mean", "--out", "probes",
                         "--save", "answers.pt"]) == 0
    chosen = json.loads(Path("probes/metrics.json").read_text())["best"]
    _same_probe(Path("answers.pt"), Path("probes/best_probe.safetensors"))
    assert load_probe("answers.pt")[1]["position"] == chosen["position"]
    assert set(torch.load("answers.pt", weights_only=True)) == {"header", "tensors"}  # a plain dict, no pickle
    # a prompt search reads the end of the user's message: the card's probe is trained there
    assert main(TRAIN + ["--hook", "1.resid_pre", "--position", "user_end", "--out", "one",
                         "--save", "layer24.pt"]) == 0
    _same_probe(Path("layer24.pt"), Path("one/best_probe.safetensors"))
    assert main(TRAIN + ["--hook", "1.resid_pre", "--save", "layer1.bin"]) == 2
    assert "a probe file ends in .pt or .safetensors" in capsys.readouterr().err
    # an answer-position probe is refused by a prompt search, in one line that says what to do
    assert main(["run", "--probe", "answers.pt", "--budget", "4", "--out", "refused", "--quiet"]) == 2
    assert "pass --position user_end" in capsys.readouterr().err

    # the card's search, as written (plus a small budget): no prefix is the start of the user's message
    assert main(["run", "--strategy", "beam", "--probe", "layer24.pt", "--budget", "12", "--set", "width=2",
                 "--set", "branching=2", "--set", "chunk=2", "--set", "max_tokens=6", "--out", "search",
                 "--quiet"]) == 0
    (line,) = Path("search/results.jsonl").read_text().splitlines()
    result = json.loads(line)["result"]
    assert result["prefix"] == "" and result["evaluations"] >= 1
    assert all(f["prompt"] == f["text"].lstrip() for f in result["top"])  # the span is the whole message
    assert main(["run", "--probe", "layer24.pt", "--target", "completion", "--out", "c", "--quiet"]) == 2
    assert "completion target needs the user's message" in capsys.readouterr().err


def test_run_help_says_what_no_prefix_means(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "with neither --prefix nor --prefixes, a prompt search starts from an empty prefix" in help_text
