from dataclasses import dataclass

import pytest
import torch

from rsearch.config import Config, check
from rsearch.errors import RsearchError
from rsearch.io_utils import append_jsonl, atomic_path, read_jsonl
from rsearch.models import load_model, model_fingerprint
from tiny import save_tiny_model


def test_load_model_from_a_local_directory(tmp_path):
    save_tiny_model(tmp_path / "m", arch="qwen2")
    model, tok = load_model(tmp_path / "m", dtype="float32", device="cpu")
    assert not model.training and tok.pad_token_id is not None and tok.chat_template
    assert all(not p.requires_grad for p in model.parameters())
    again, _ = load_model(str(tmp_path / "m"), device="cpu")
    assert model_fingerprint(model) == model_fingerprint(again)
    bf16, _ = load_model(tmp_path / "m", dtype="bf16", device="cpu")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_load_model_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RsearchError, match="not a model directory"):
        load_model(tmp_path / "empty")
    with pytest.raises(RsearchError, match="unknown dtype"):
        load_model(tmp_path / "empty", dtype="int3")


@dataclass(frozen=True)
class _Cfg(Config):
    width: int = 4
    names: tuple[str, ...] = ("a",)
    rate: float = 0.5

    def __post_init__(self):
        check(self.width > 0, f"width: must be positive, got {self.width}")


def test_config_names_the_bad_field(tmp_path):
    assert _Cfg.from_dict({"width": "7", "names": "x,y"}) == _Cfg(7, ("x", "y"), 0.5)
    with pytest.raises(RsearchError, match="unknown option 'widht'"):
        _Cfg.from_dict({"widht": 3})
    with pytest.raises(RsearchError, match="width: must be positive"):
        _Cfg.from_dict({"width": 0})
    with pytest.raises(RsearchError, match="rate: expected float"):
        _Cfg.from_dict({"rate": "fast"})
    (tmp_path / "c.yaml").write_text("width: [1\n")
    with pytest.raises(RsearchError, match="not valid YAML"):
        _Cfg.from_yaml(tmp_path / "c.yaml")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert not target.exists() and list(tmp_path.iterdir()) == []
    append_jsonl(tmp_path / "r.jsonl", {"a": 1})
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"a": 2')  # a torn last line, as after a crash
    assert read_jsonl(tmp_path / "r.jsonl") == [{"a": 1}]
