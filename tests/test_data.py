import pytest

from rsearch.data import load_splits, pairs_from_records
from rsearch.errors import RsearchError
from tiny import feedback_records, write_jsonl


def test_single_file_is_split_by_prompt_with_a_seed(tmp_path):
    path = tmp_path / "fb.jsonl"
    write_jsonl(path, feedback_records(60))
    a = load_splits(str(path), seed=3)
    b = load_splits(str(path), seed=3)
    ids = {k: {p.prompt_id for p in v} for k, v in a.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in a.values()) == 60
    assert [p.prompt_id for p in a["test"]] == [p.prompt_id for p in b["test"]]


def test_directory_of_named_splits(tmp_path):
    write_jsonl(tmp_path / "train_prefs.jsonl", feedback_records(40, seed=1))
    write_jsonl(tmp_path / "test_prefs.jsonl", feedback_records(10, seed=2))
    s = load_splits(str(tmp_path))
    assert len(s["test"]) == 10 and len(s["train"]) + len(s["val"]) == 40
    assert s["train"][0].chosen and s["train"][0].prompt[0]["role"] == "user"


def test_bad_rows_name_the_problem():
    rows = feedback_records(3)
    with pytest.raises(RsearchError, match="missing column 'score_rejected'"):
        pairs_from_records([{k: v for k, v in r.items() if k != "score_rejected"} for r in rows])
    rows[1]["rejected"][-1]["content"] = "  "
    with pytest.raises(RsearchError, match="row 1 has an empty rejected completion"):
        pairs_from_records(rows)
    with pytest.raises(RsearchError, match="not found"):
        load_splits("./no/such/file.jsonl")
