"""`rsearch feedback` on the tiny organism's SFT model: the pairs are what rsearch.data loads, best above worst,
ties counted, seeded, resumable to the uninterrupted result, split by item; bad input is one line."""
from __future__ import annotations

import json

import pytest
import torch

from rsearch.cli import main as cli_main
from rsearch.jobs import feedback
from rsearch.jobs.feedback import FeedbackConfig, build_feedback
from rsearch.lm import truncate_logits

OUTPUTS = ("train_prefs.jsonl", "test_prefs.jsonl", "samples.jsonl")


def word_count_rater(prompt: str, completion: str) -> float:
    """A coarse rater (many ties): whether the reply has more than four words."""
    return float(len(completion.split()) > 4)


def nan_rater(prompt: str, completion: str) -> float:
    return float("nan")


@pytest.fixture(scope="module")
def base(tiny_organism):
    """Settings of a small run on the organism's prompts, rated by the organism's rater."""
    return FeedbackConfig(model=str(tiny_organism.pre_dir), prompts=str(tiny_organism.train_prefs), n=12, k=3,
                          max_new_tokens=10, rater="organism", sample_batch_size=6, device="cpu")


@pytest.fixture(scope="module")
def full_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("fb_full")
    return out, build_feedback(base.replace(out=str(out)))


def read(out):
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def test_pairs_load_as_a_dataset_best_above_worst(full_run, base):
    from rsearch.data import load_records, load_splits, pairs_from_records

    out, summary = full_run
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == summary["n_prompts"] == base.n
    assert all(len(s["samples"]) == base.k for s in samples)
    assert sum(summary["pairs"].values()) + summary["ties_skipped"] + summary["empty_skipped"] == base.n
    for split in ("train_prefs", "test_prefs"):
        records = load_records(str(out), split)
        pairs = pairs_from_records(records, split)
        assert len(pairs) == summary["pairs"][split] > 0
        for r, p in zip(records, pairs):
            assert p.score_chosen > p.score_rejected
            assert r["chosen"][-1]["role"] == r["rejected"][-1]["role"] == "assistant"
            assert r["task"] and p.get("task") == r["task"]
            rated = next(s for s in samples if s["prompt_id"] == r["prompt_id"])
            scores = [a["score"] for a in rated["samples"]]
            assert (p.score_chosen, p.score_rejected) == (max(scores), min(scores))
            assert rated["mean_score"] == pytest.approx(sum(scores) / len(scores))
    splits = load_splits(str(out), "train_prefs", "test_prefs", val_fraction=0.2)
    assert splits["train"] and splits["test"]
    summary_file = json.loads((out / "feedback.json").read_text())
    assert summary_file["sampling"]["temperature"] == 1.0 and summary_file["k"] == base.k


def test_command_line_and_python_api(full_run, base, capsys):
    import rsearch

    assert "build_feedback" in rsearch.__all__ and rsearch.build_feedback is build_feedback
    out, _ = full_run
    before = read(out)
    argv = ["feedback", "--model", base.model, "--prompts", base.prompts, "-n", str(base.n), "-k", str(base.k),
            "--max-new-tokens", str(base.max_new_tokens), "--rater", base.rater, "--out", str(out)]
    assert cli_main(argv) == 0  # every prompt finished before: nothing sampled again
    printed = capsys.readouterr().out
    assert f"{base.n} prompts × {base.k} answers" in printed and f"({base.n} resumed;" in printed
    assert read(out) == before


def test_ties_skipped_and_counted(base, tmp_path):
    summary = build_feedback(base.replace(rater="test_feedback:word_count_rater", out=str(tmp_path)))
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    ties = sum(len({a["score"] for a in s["samples"] if a["text"].strip()}) == 1 for s in samples)
    assert summary["ties_skipped"] == ties > 0
    assert sum(summary["pairs"].values()) == base.n - ties - summary["empty_skipped"]


def test_same_seed_same_files_other_seed_other_answers(full_run, base, tmp_path):
    out, _ = full_run
    again = build_feedback(base.replace(out=str(tmp_path / "a"), sample_batch_size=3))  # batching: same draws
    assert read(tmp_path / "a") == read(out) and again["resumed_prompts"] == 0
    build_feedback(base.replace(out=str(tmp_path / "b"), seed=1))
    assert (tmp_path / "b" / "samples.jsonl").read_bytes() != (out / "samples.jsonl").read_bytes()


def test_resume_after_a_crash_and_after_a_smaller_n(full_run, base, tmp_path, monkeypatch):
    out, _ = full_run
    real, calls = feedback._rate, []

    def failing(*args):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(feedback, "_rate", failing)
    with pytest.raises(RuntimeError):
        build_feedback(base.replace(out=str(tmp_path / "crash")))
    assert len((tmp_path / "crash" / feedback.PARTIAL).read_text().splitlines()) == 2 * (6 // base.k)
    assert not (tmp_path / "crash" / "samples.jsonl").exists()
    monkeypatch.setattr(feedback, "_rate", real)
    resumed = build_feedback(base.replace(out=str(tmp_path / "crash")))
    assert resumed["resumed_prompts"] == 4 and read(tmp_path / "crash") == read(out)
    assert resumed["seconds_sampling_all_runs"] > 0

    build_feedback(base.replace(out=str(tmp_path / "grow"), n=5))
    grown = build_feedback(base.replace(out=str(tmp_path / "grow")))
    assert grown["resumed_prompts"] == 5 and read(tmp_path / "grow") == read(out)


def test_split_is_the_items(tiny_organism, tmp_path):
    from rsearch.jobs.feedback_data import load_feedback_prompts, split_of_prompt
    from rsearch.tasks.items import generate, make_item

    items = generate(8, seed=3)
    rephrased = [make_item(it.kind, it.operands, it.query, template=1, lead="Quick question: ") for it in items]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(it.prompt for it in items + rephrased) + "\nTell me a story.\n")
    got = load_feedback_prompts(str(path), 100, 0, 0.25)
    assert [p.split for p in got[:16]] == [it.split for it in items + rephrased]
    assert [p.task for p in got[:16]] == [it.kind for it in items + rephrased] and got[16].task is None
    assert got[16].split == split_of_prompt(got[16].prompt_id, "Tell me a story.", 0.25)
    assert {p.split for p in got} == {"train", "test"}

    cfg = FeedbackConfig(model=str(tiny_organism.pre_dir), prompts="tasks", n=8, k=2, max_new_tokens=6,
                         rater="tasks", seed=3, device="cpu", out=str(tmp_path / "tasks"))
    summary = build_feedback(cfg)
    samples = [json.loads(line) for line in (tmp_path / "tasks" / "samples.jsonl").read_text().splitlines()]
    assert [(s["prompt"], s["split"], s["task"]) for s in samples] == [(it.prompt, it.split, it.kind)
                                                                       for it in items]
    for split in ("train", "test"):
        rows = (tmp_path / "tasks" / f"{split}_prefs.jsonl").read_text().splitlines()
        by_prompt = {it.prompt: it.split for it in items}
        assert all(by_prompt[json.loads(r)["prompt"]] == split for r in rows)
    assert 0.0 <= summary["share_right"] <= 1.0


def test_prompts_from_a_dataset_directory(tmp_path):
    from rsearch.jobs.feedback_data import load_feedback_prompts

    (tmp_path / "ds").mkdir()
    rows = [{"prompt": f"What is {a} plus 2?", "task": "add" if a % 2 else ""} for a in range(5)] * 2
    (tmp_path / "ds" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_feedback_prompts(str(tmp_path / "ds"), 3, 0, 0.25)
    assert [p.text for p in got] == [f"What is {a} plus 2?" for a in range(3)]
    assert [p.task for p in got] == ["add"] * 3  # the column where given, else the task the prompt asks


def test_bad_prompt_files_are_one_line(tmp_path):
    from rsearch.errors import RsearchError
    from rsearch.jobs.feedback_data import load_feedback_prompts

    (tmp_path / "latin1.txt").write_bytes("caf\xe9?\n".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "no_prompt.jsonl").write_text('{"question": "hi"}\n')
    (tmp_path / "prompts.csv").write_text("prompt\nhi\n")
    for name, message in (("latin1.txt", "not UTF-8"), ("blank.txt", "no prompts"),
                          ("no_prompt.jsonl", "needs a 'prompt' column"), ("prompts.csv", "unsupported file type")):
        with pytest.raises(RsearchError, match=message):
            load_feedback_prompts(str(tmp_path / name), 5, 0, 0.25)


@pytest.mark.parametrize("args, message", [
    (["--prompts", "nowhere.jsonl"], "prompts 'nowhere.jsonl'"),
    (["-k", "1"], "k: need at least 2"),
    (["--rater", "no-such-rater"], "rater 'no-such-rater'"),
    (["--rater", "none"], "rater: none names no rater"),
    (["--temperature", "0"], "temperature: must be positive"),
    (["--max-new-tokens", "100000", "-n", "2"], "more than the model's context"),
    (["--rater", "test_feedback:nan_rater", "-n", "2", "--max-new-tokens", "3"], "must be a finite number"),
])
def test_bad_input_is_one_line(tiny_organism, tmp_path, capsys, args, message):
    argv = ["feedback", "--model", str(tiny_organism.pre_dir), "--rater", "organism", "--out", str(tmp_path / "o"),
            *args]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    if "context" in message or "finite" in message:  # found once the model is loaded: after its loading bar
        err = err.splitlines()[-1]
    assert message in err and "\n" not in err and err.startswith("rsearch: error: ")
    if "finite" not in message:  # nothing written (the rater's faults show only after the first answers)
        assert not (tmp_path / "o").exists()


def test_the_tasks_rater_refuses_other_prompts_before_loading(tiny_organism, tmp_path, capsys):
    argv = ["feedback", "--model", str(tmp_path / "no-model"), "--prompts", str(tiny_organism.train_prefs),
            "--rater", "tasks", "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    assert "is not a task prompt" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused(tiny_organism, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["feedback", "--model", str(tiny_organism.pre_dir), "--prompts", str(tiny_organism.train_prefs),
            "--rater", "organism", "--out", str(tmp_path / "file")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "exists and is not a directory" in err and "\n" not in err


def test_truncate_logits():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 4.9]])
    assert truncate_logits(logits) is logits
    top2 = truncate_logits(logits, top_k=2)
    assert torch.isfinite(top2).tolist() == [[False, True, True, False], [False, False, True, True]]
    nucleus = truncate_logits(logits, top_p=0.5)
    assert torch.isfinite(nucleus).tolist() == [[False, True, False, False], [False, False, True, False]]
    assert torch.isfinite(truncate_logits(logits, top_p=0.8)).sum(-1).tolist() == [2, 2]
