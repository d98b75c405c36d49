from dataclasses import dataclass, field

import pytest
import torch

from rsearch.config import Config, add_config_arguments, check, config_from_args, setting
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


@dataclass(frozen=True)
class _Inner(Config):
    depth: int = 2
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Job(Config):
    size: int = setting(3, short="-s", help="how big")
    names: tuple[str, ...] = setting((), flag="--name", repeat=True)
    fast: bool = setting(False)
    out: str = setting("runs/x", runtime=True)
    inner: _Inner = field(default_factory=lambda: _Inner(depth=5))


def test_flags_yaml_and_cache_keys_come_from_the_fields(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _Job, config_file="a YAML file")
    assert "how big (default 3)" in parser.format_help()
    (tmp_path / "c.yaml").write_text("job:\n  size: 4\n  inner: {tags: [a]}\n")
    args = parser.parse_args(["--config", str(tmp_path / "c.yaml"), "-s", "9", "--name", "p , q", "--name", "r",
                              "--fast"])
    cfg = config_from_args(args, _Job, "job")
    # the flag wins over the file; a section given in part keeps the rest of its default (depth 5, not 2)
    assert cfg == _Job(size=9, names=("p , q", "r"), fast=True, inner=_Inner(depth=5, tags=("a",)))
    assert config_from_args(parser.parse_args([]), _Job, "job") == _Job()
    assert "out" not in cfg.key_dict() and cfg.key_dict()["inner"] == {"depth": 5, "tags": ("a",)}
    assert cfg.replace(inner={"depth": 1}).inner == _Inner(depth=1, tags=("a",))
    with pytest.raises(RsearchError, match=r"job.inner: unknown option 'dpeth'"):
        _Job.from_dict({"inner": {"dpeth": 1}}, where="job")
    with pytest.raises(RsearchError, match="size: expected int"):
        config_from_args(parser.parse_args(["-s", "big"]), _Job, "job")
