"""Typed records of JSON: frozen dataclasses whose fields are exactly the keys, checked all the way down.

`Record.from_dict` builds a record from its JSON mapping by its type hints — nested records, `list[X]`,
`dict[str, X]`, `X | None`, numbers, strings, booleans — and fails with one line naming the path of the first
key that is unknown, missing or of the wrong type. A field whose default is `ABSENT` may be left out of the JSON
(a number a stage computes only sometimes); `to_dict` leaves it out again, so a record round-trips its JSON.

A record reads like the mapping it was (`row["layer"]`, `row.get("auroc")`, `"auroc" in row`, `{**row}`), so
code that reads results needs no rewrite, but a key that is no field raises `KeyError` at once: renaming a field
breaks every reader of the old name in the tests that build a record.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterator, TypeVar

from rsearch.errors import RsearchError

T = TypeVar("T", bound="Record")


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self):
        return "ABSENT"


ABSENT: Any = _Absent()  # the default of a field the JSON may leave out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    @classmethod
    def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
        return _build(cls, data, where or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not ABSENT}

    # ----- read like a mapping -----

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, ABSENT) if key in _names(type(self)) else ABSENT
        if value is ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, ABSENT) is not ABSENT

    def keys(self) -> list[str]:
        return [n for n in _names(type(self)) if getattr(self, n) is not ABSENT]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def plain(value: Any) -> Any:
    """Records (at any depth) as the plain JSON-able dicts they were built from."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _build(cls: type[T], data: Any, where: str) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise RsearchError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RsearchError(f"{where}: unknown key {unknown[0]!r} for {cls.__name__}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is ABSENT:
                continue
            raise RsearchError(f"{where}: missing key {name!r} for {cls.__name__}")
        kwargs[name] = coerce(hints[name], data[name], f"{where}.{name}")
    return cls(**kwargs)


def coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` as type `hint` says (records built, numbers and strings checked); one-line errors name `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(arg, value, where)
            except RsearchError as e:
                errors.append(str(e))
        raise RsearchError(errors[0] if errors else f"{where}: null is not allowed here")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RsearchError(f"{where}: expected a list, got {type(value).__name__}")
        return [coerce(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RsearchError(f"{where}: expected a mapping, got {type(value).__name__}")
        inner = args[1] if len(args) == 2 else Any
        return {k: coerce(inner, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return _build(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RsearchError(f"{where}: expected a number, got {value!r}")
        return value  # an int stays an int, so the JSON round-trips
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RsearchError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RsearchError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RsearchError(f"{where}: expected a string, got {value!r}")
        return value
    return value
