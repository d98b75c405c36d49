"""Pluggable raters (a local reward model, a Python callable, the organism's) and `rsearch rate`."""
import json
from pathlib import Path

import pytest
import torch

from rsearch.errors import RsearchError
from rsearch.raters import HFRewardModel, load_rater

CALLS = {"n": 0, "fail_after": None}


def word_count_rater(prompt: str, completion: str) -> float:
    """A callable rater for the tests: the number of words in the completion."""
    return float(len(completion.split()))


def counting_true_rater(prompt: str, completion: str) -> float:
    """The organism's noiseless rater, counting its calls and failing after `fail_after` of them."""
    from rsearch.organism.rater import true_score

    CALLS["n"] += 1
    if CALLS["fail_after"] is not None and CALLS["n"] > CALLS["fail_after"]:
        raise KeyboardInterrupt
    return true_score(prompt, completion)


def not_a_number(prompt: str, completion: str):
    return "high"


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A tiny random-init Llama sequence classifier with one output and the tiny chat tokenizer."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    path = tmp_path_factory.mktemp("rm") / "reward_model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reward_model_rater_reads_the_chat_templated_conversation(reward_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rater = load_rater(str(reward_model_dir), device="cpu", batch_size=3)
    assert isinstance(rater, HFRewardModel)
    prompts = ["what is two plus three", [{"role": "user", "content": "list some animals"}], "hello world",
               "repeat after me hello"]
    completions = ["the answer is five", "cat dog bird", "hello", "hello hello thank you nice good"]
    got = rater.rate(prompts, completions)
    assert len(got) == 4 and len(set(got)) == 4
    # by hand, one conversation at a time (no padding): the same numbers, so batching and padding change nothing
    tok = AutoTokenizer.from_pretrained(reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    for p, c, value in zip(prompts, completions, got):
        user = p if isinstance(p, str) else p[0]["content"]
        text = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": c}],
                                       tokenize=False)
        assert text.startswith("<|user|>\n" + user)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            want = float(model(**ids).logits[0, 0])
        assert value == pytest.approx(want, abs=1e-5)


def test_callable_and_organism_raters():
    from rsearch.organism.rater import true_score

    r = load_rater("test_raters:word_count_rater")
    assert r.rate(["q", [{"role": "user", "content": "q"}]], ["a b c", ""]) == [3.0, 0.0]
    org = load_rater("organism")
    texts = [("what is 3 plus 5 ?", "sure ! 3 plus 5 is 8 ."), ("what is 3 plus 5 ?", "ugh , 9 .")]
    assert org.rate(*zip(*texts)) == [true_score(p, c) for p, c in texts]
    assert load_rater("none") is None and load_rater(None) is None


@pytest.mark.parametrize("spec, words", [
    ("nonsense", "use auto, organism, none"), ("no_such_module_x:f", "cannot import"),
    ("test_raters:missing", "has no 'missing'"), ("./no/such/dir", "not found")])
def test_bad_specs_are_one_line(spec, words):
    with pytest.raises(RsearchError) as e:
        load_rater(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_reward_model_and_bad_return_value(tmp_path, reward_model_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RsearchError, match="without config.json"):
        load_rater(str(tmp_path / "empty"))
    with pytest.raises(RsearchError, match="did not return a number"):
        load_rater("test_raters:not_a_number").rate(["q"], ["a"])


def _tiny_data(tiny_organism, tmp_path) -> Path:
    """The tiny organism's test split, alone in a directory."""
    src = next(Path(tiny_organism.data_dir).glob("test_prefs.*"))
    d = tmp_path / "data"
    d.mkdir()
    (d / src.name).write_bytes(src.read_bytes())
    return d


def test_rate_round_trip_on_the_organism_data(tiny_organism, tmp_path):
    """Re-rated by the organism's noiseless rater: every row where the noisy labels ranked the worse completion
    first is swapped, with all its paired columns, and the output loads as a dataset again."""
    from rsearch.cli import main
    from rsearch.data import load_records, load_splits

    data = _tiny_data(tiny_organism, tmp_path)
    rows = load_records(str(data), "test_prefs")
    CALLS.update(n=0, fail_after=None)
    out = tmp_path / "rated"
    assert main(["-q", "rate", "--rater", "test_raters:counting_true_rater", "--dataset", str(data), "--out", str(out),
                 "--batch-size", "16"]) == 0
    assert CALLS["n"] == 2 * len(rows)
    got = [json.loads(line) for line in (out / "test_prefs.jsonl").read_text().splitlines()]
    assert len(got) == len(rows)
    want_swaps = [r["true_score_rejected"] > r["true_score_chosen"] for r in rows]
    assert [g["swapped"] for g in got] == want_swaps and 0 < sum(want_swaps) < len(rows)
    for old, new in zip(rows, got):
        assert new["score_chosen"] >= new["score_rejected"]
        assert new["score_chosen"] == pytest.approx(max(old["true_score_chosen"], old["true_score_rejected"]))
        assert new["true_score_chosen"] == new["score_chosen"]  # paired columns moved with their completion
        side = "rejected" if new["swapped"] else "chosen"
        assert new["chosen"] == old[side] and new["messages"] == new["chosen"]
        assert new["score_chosen_original"] == old["score_chosen"]
    summary = json.loads((out / "rate.json").read_text())
    assert summary["splits"][0]["swapped"] == sum(want_swaps)
    assert not list(out.glob(".*"))  # no partial or stamp file left
    pairs = load_splits(str(out), "test_prefs", None, seed=0)
    same = sum(r["chosen"] == r["rejected"] for r in rows)  # they prefer nothing: a preference reader drops them
    assert sum(len(v) for v in pairs.values()) == len(rows) - same


def test_rate_resumes_after_an_interruption(tiny_organism, tmp_path):
    from rsearch.jobs.rate import RateConfig, run_rate

    data = _tiny_data(tiny_organism, tmp_path)
    cfg = RateConfig(rater="test_raters:counting_true_rater", dataset=str(data), out=str(tmp_path / "r"),
                     batch_size=8)
    CALLS.update(n=0, fail_after=2 * 8 * 3 + 5)  # dies inside the fourth batch
    with pytest.raises(KeyboardInterrupt):
        run_rate(cfg)
    partial = tmp_path / "r" / ".test_prefs.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 24 and not (tmp_path / "r" / "test_prefs.jsonl").exists()
    CALLS.update(n=0, fail_after=None)
    summary = run_rate(cfg)
    n = summary["splits"][0]["rows"]
    assert summary["splits"][0]["resumed_from_row"] == 24 and CALLS["n"] == 2 * (n - 24)
    resumed = (tmp_path / "r" / "test_prefs.jsonl").read_text()
    run_rate(cfg.replace(out=str(tmp_path / "fresh")))
    assert resumed == (tmp_path / "fresh" / "test_prefs.jsonl").read_text()


def test_rate_bad_input_is_one_line(tmp_path, capsys):
    from rsearch.cli import main

    assert main(["rate", "--rater", "bogus", "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["rate", "--rater", "test_raters:word_count_rater", "--dataset", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_compare_with_a_callable_rater(tiny_organism, tmp_path):
    from rsearch.jobs.compare import CompareConfig, run_compare
    from test_compare import make_subjects

    s = make_subjects()
    result = run_compare(CompareConfig(pre=s["pre"], post=s["post"], probe=s["probe"], dataset=s["data"], n=4, k=2,
                                       max_new_tokens=8, rater="test_raters:word_count_rater",
                                       out=str(tmp_path / "c"), n_boot=100))
    assert result.summary.rater == "test_raters:word_count_rater"
    for r in result.table:
        assert r["true_reward"] == len(r["completion"].split())
    assert "true_reward" in result.summary.metrics
