"""Stores and caches that verify themselves: damaged activation-store entries are re-extracted, non-finite
activations and probes are refused with one line, a damaged organism build is not reported complete."""
import logging
import shutil

import numpy as np
import pytest
import torch

from rsearch.activations import build_store, store_damage
from rsearch.chat import encode_conversation
from rsearch.errors import RsearchError
from rsearch.models import model_fingerprint
from rsearch.probes import save_probe
from rsearch.probes.models import make_probe
from tiny import tiny_model, tiny_tokenizer

TOK = tiny_tokenizer()
ROWS = [encode_conversation(TOK, p, c) for p, c in [
    ("what is two plus three please", "the answer is five"), ("hello", "nice"), ("list some animals", "cat dog"),
    ("repeat after me", "hello world hello"), ("hello world", "good reply"), ("thank you", "you")]]
HOOKS, POSITIONS = ["0.resid_pre", "1.resid_post"], ["user_end", "-1"]


def _store(model, root):
    return build_store(model, ROWS, HOOKS, POSITIONS, root=root, pad_id=TOK.pad_token_id, batch_size=2,
                       progress=False, model_key=model_fingerprint(model))


def _assert_same(a, b):
    for hook in HOOKS:
        for pos in POSITIONS:
            np.testing.assert_array_equal(a.array(hook, pos), b.array(hook, pos))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", vocab_size=len(TOK))


@pytest.fixture(scope="module")
def clean(model, tmp_path_factory):
    return _store(model, tmp_path_factory.mktemp("clean"))


def _damage_overwrite(path):
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - 16)
        f.write(b"\x7f" * 16)


def _damage_truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 40)


@pytest.mark.parametrize("how", [_damage_overwrite, _damage_truncate, lambda p: p.unlink()],
                         ids=["overwritten", "truncated", "missing"])
def test_damaged_store_entry_is_reextracted(model, clean, tmp_path, caplog, how):
    store = _store(model, tmp_path)
    assert store.complete and store_damage(store.path) is None
    victim = sorted(store.path.glob("*.npy"))[1]
    how(victim)
    assert store_damage(store.path)
    with caplog.at_level(logging.WARNING, logger="rsearch.activations"):
        again = _store(model, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "rsearch.activations"]
    assert len(lines) == 1 and "re-extracting" in lines[0] and victim.name in lines[0] and "\n" not in lines[0]
    assert again.path == store.path and again.complete and store_damage(again.path) is None
    _assert_same(again, clean)


def test_clean_store_is_reused_without_a_log_line(model, tmp_path, caplog):
    store = _store(model, tmp_path)
    mtime = (store.path / "complete.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rsearch.activations"):
        _store(model, tmp_path)
    assert not caplog.records and (store.path / "complete.json").stat().st_mtime_ns == mtime


def test_store_without_a_manifest_is_trusted_but_checked_for_shape(model, tmp_path):
    """Entries finished before complete.json held the manifest are reused, unless an array is truncated."""
    import json
    store = _store(model, tmp_path)
    (store.path / "complete.json").write_text(json.dumps({"n_batches": 3}))
    assert store_damage(store.path) is None
    _damage_truncate(sorted(store.path.glob("*.npy"))[0])
    assert "unreadable" in store_damage(store.path)


def test_nan_activations_are_one_line(tmp_path):
    model = tiny_model("llama", vocab_size=len(TOK))
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(RsearchError) as e:
        _store(model, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "not finite" in msg and "blocks.1.hook_resid_post" in msg, msg
    assert not (next(tmp_path.iterdir()) / "complete.json").exists()


def test_save_probe_refuses_nan_weights(tmp_path):
    for name in ("weight", "mean", "std"):
        probe = make_probe("linear", 8)
        with torch.no_grad():
            getattr(probe, name)[3] = float("nan") if name != "std" else float("inf")
        path = tmp_path / f"p-{name}.safetensors"
        with pytest.raises(RsearchError) as e:
            save_probe(path, probe, {"hook": "0.resid_pre", "position": "-1"})
        assert "\n" not in str(e.value) and str(path) in str(e.value) and name in str(e.value)
        assert not path.exists() and not list(tmp_path.iterdir())


# ----- the organism cache -----

@pytest.fixture
def organism_copy(tiny_organism, tmp_path, monkeypatch):
    """The tiny organism copied into a fresh RSEARCH_HOME, its card given the manifest a build now records; a
    rebuild is stubbed (recorded, not run: a real one takes minutes on a busy machine)."""
    from rsearch.organism import build as B
    from rsearch.organism import default_dir

    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "home"))
    root = default_dir("tiny", 0)
    shutil.copytree(tiny_organism.root, root)
    card = dict(tiny_organism.card)
    card.pop("files", None)
    B.record_files(root, card)
    rebuilt = []
    monkeypatch.setattr(B, "build", lambda cfg, out, progress=True: rebuilt.append(out) or "rebuilt")
    return root, rebuilt


def test_intact_organism_copy_is_reused(organism_copy):
    from rsearch.organism import ensure

    root, rebuilt = organism_copy
    assert set(ensure("tiny", seed=0, progress=False).card["files"]) >= {
        "pre/model.safetensors", "post/model.safetensors", "post/config.json", "pre/tokenizer.json",
        "data/train_prefs.jsonl", "data/test_prefs.jsonl"}
    assert not rebuilt


@pytest.mark.parametrize("damage", ["deleted", "truncated", "overwritten"])
def test_damaged_organism_is_not_reported_complete(organism_copy, caplog, damage):
    from rsearch.organism import Organism, ensure

    root, rebuilt = organism_copy
    victim = root / ("post/model.safetensors" if damage != "overwritten" else "data/test_prefs.jsonl")
    if damage == "deleted":
        victim.unlink()
    elif damage == "truncated":
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 2)
    else:
        text = victim.read_bytes()
        victim.write_bytes(text[:100] + (b"x" if text[100:101] != b"x" else b"y") + text[101:])
    if damage != "overwritten":  # Organism.at checks sizes only (a stat per file)
        with pytest.raises(RsearchError) as e:
            Organism.at(root)
        assert "\n" not in str(e.value) and "post/model.safetensors" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="rsearch.organism"):
        assert ensure("tiny", seed=0, progress=False) == "rebuilt"
    assert rebuilt == [root]
    lines = [r.getMessage() for r in caplog.records if r.name == "rsearch.organism"]
    assert len(lines) == 1 and str(victim.relative_to(root)) in lines[0] and "rebuilding" in lines[0]


def test_organism_card_without_manifest_is_trusted(organism_copy):
    """Caches built before cards held the manifest are used as before, not all rebuilt at once."""
    import json

    from rsearch.organism import Organism, ensure

    root, rebuilt = organism_copy
    card = json.loads((root / "card.json").read_text())
    del card["files"]
    (root / "card.json").write_text(json.dumps(card))
    (root / "data" / "sft.jsonl").unlink()
    assert ensure("tiny", seed=0, progress=False).root == root and not rebuilt
    assert Organism.at(root).card == card


def test_build_records_the_manifest_and_a_damaged_build_is_rebuilt(tmp_path, monkeypatch):
    """The whole path with the training stubbed: build records every file, a deleted file brings it back."""
    import json

    from rsearch.organism import build as B
    from rsearch.organism.config import OrganismConfig

    builds = []

    def fake_build(cfg, root, progress):
        builds.append(root)
        for rel in ("pre/model.safetensors", "post/model.safetensors", "post/config.json", "data/test_prefs.jsonl"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(rel.encode() * 50)
        card = {"version": B.BUILD_VERSION, "build_seconds": 0.0, "config": cfg.to_dict()}
        (root / "card.json").write_text(json.dumps(card))
        return card

    monkeypatch.setattr(B, "_build_into", fake_build)
    cfg, root = OrganismConfig.preset("tiny", 0), tmp_path / "org"
    org = B.build_or_load(cfg, root, progress=False)
    assert sorted(org.card["files"]) == ["data/test_prefs.jsonl", "post/config.json", "post/model.safetensors",
                                         "pre/model.safetensors"]
    assert org.card["files"]["post/config.json"]["size"] == len(b"post/config.json") * 50
    assert B.build_or_load(cfg, root, progress=False).card == org.card and len(builds) == 1
    (root / "post" / "model.safetensors").unlink()
    again = B.build_or_load(cfg, root, progress=False)
    assert len(builds) == 2 and (root / "post" / "model.safetensors").is_file() and again.card == org.card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["org"]
