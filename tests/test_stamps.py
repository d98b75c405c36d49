"""The subjects stage's content stamps: a file edited in place changes the stamp (and so every stage's key),
an unchanged file is hashed once, a hub id is stamped by its revision."""
from __future__ import annotations

import os

from rsearch.study.stamps import content_stamps
from rsearch.subjects import Subjects


def subjects(pre, post, data):
    return Subjects(pre=str(pre), post=str(post), dataset=str(data), rater=None, beta=0.1, beta_source="config",
                    organism=False, organism_size=None)


def test_stamps_follow_the_content(tmp_path, monkeypatch):
    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "home"))
    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir(), data.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights-1")
    (data / "train.jsonl").write_text('{"prompt": "a"}\n')
    s = subjects(model, model, data)
    first = content_stamps(s)
    assert first == content_stamps(s) and set(first["post"]["files"]) == {"config.json", "model.safetensors"}
    # the same size, edited in place: a new hash (the memo is keyed by size and mtime, and the mtime moved)
    (data / "train.jsonl").write_text('{"prompt": "b"}\n')
    st = (data / "train.jsonl").stat()
    os.utime(data / "train.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = content_stamps(s)
    assert second["dataset"] != first["dataset"] and second["post"] == first["post"]
    hub = content_stamps(subjects("org/pre-model", "org/post-model", "org/data"), "v1", "")
    assert hub["pre"] == {"hub": "org/pre-model", "revision": "v1", "commit": None}
    assert hub["post"]["revision"] == "main"


def test_an_edited_dataset_reruns_every_stage(tmp_path, monkeypatch):
    from rsearch.jobs.demo import stage_keys
    from rsearch.jobs.demo_config import DemoConfig

    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("1\n")
    s = subjects("org/pre", "org/post", data)
    before = stage_keys(DemoConfig(), s)
    (data / "train.jsonl").write_text("22\n")
    after = stage_keys(DemoConfig(), s)
    assert all(before[k] != after[k] for k in before)
    pinned = stage_keys(DemoConfig().replace(revision_post="abc123"), s)
    assert all(pinned[k] != after[k] for k in after)
