"""Frozen config dataclasses with from_dict / from_yaml that name the bad field."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rsearch.errors import RsearchError

T = TypeVar("T", bound="Config")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except RsearchError as e:
                errors.append(str(e))
        raise RsearchError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RsearchError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RsearchError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any or annotation is object:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise RsearchError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise RsearchError(f"{name}: expected a number, got {value!r}")
        try:
            out = annotation(value)
        except (TypeError, ValueError):
            raise RsearchError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != out:
            raise RsearchError(f"{name}: expected an integer, got {value!r}")
        return out
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise RsearchError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for frozen configs. Subclasses validate in __post_init__ and raise RsearchError naming the field."""

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise RsearchError(f"{prefix}unknown option {unknown[0]!r} for {cls.__name__} "
                               f"(known: {', '.join(sorted(fields))})")
        kwargs = {k: _coerce(f"{where + '.' if where else ''}{k}", v, hints[k]) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, *, section: str | None = None) -> T:
        return cls.from_dict(load_yaml(path, section), where=section or "")

    def replace(self: T, **changes: Any) -> T:
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Reads a YAML mapping (optionally one top-level section of it) with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise RsearchError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise RsearchError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RsearchError(f"{p}: expected a mapping at the top level")
    if section is not None:
        data = data.get(section) or {}
        if not isinstance(data, dict):
            raise RsearchError(f"{p}: section {section!r} must be a mapping")
    return data


def check(condition: bool, message: str) -> None:
    """Raises RsearchError(message) unless condition holds: the one-liner validators use."""
    if not condition:
        raise RsearchError(message)
