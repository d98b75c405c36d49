"""Frozen config dataclasses: the one place a job's settings are declared.

A job's settings are the fields of one `Config`. The same fields give its YAML keys (`from_dict`, nested
configs as nested mappings), its command-line flags (`add_config_arguments` / `config_from_args`, help text
and flag spelling from `setting(...)` metadata) and its cache keys (`key_dict`: every field except those
marked `runtime=True`, which change how a job runs but never what it computes).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
import argparse
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rsearch.errors import RsearchError, one_line

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
    if isinstance(annotation, type) and issubclass(annotation, Config):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise RsearchError(f"{name}: expected a mapping of {annotation.__name__} settings, got {value!r}")
        return annotation.from_dict(value, where=name)
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
        except (TypeError, ValueError, OverflowError):
            raise RsearchError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is float and not math.isfinite(out):  # nan compares false with every bound a check sets
            raise RsearchError(f"{name}: must be a finite number, got {value!r}")
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
    def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "", base: "Config | None" = None) -> T:
        """`cls` from a mapping; keys left out keep `base`'s values (default: the defaults). A nested config
        given as a mapping is merged the same way into its base value, so a YAML section may set a few keys."""
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise RsearchError(f"{prefix}unknown option {unknown[0]!r} for {cls.__name__} "
                               f"(known: {', '.join(sorted(fields))})")
        kwargs = {}
        for k, v in data.items():
            name = f"{where + '.' if where else ''}{k}"
            hint = hints[k]
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(v, dict):
                inner = getattr(base, k) if base is not None else _default(fields[k])
                kwargs[k] = hint.from_dict(v, where=name, base=inner)
            else:
                kwargs[k] = _coerce(name, v, hint)
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, *, section: str | None = None) -> T:
        return cls.from_dict(load_yaml(path, section), where=section or "")

    def replace(self: T, **changes: Any) -> T:
        """A copy with `changes` (checked and coerced like from_dict; nested mappings merge)."""
        return type(self).from_dict(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """to_dict without runtime-only fields (recursively): what a cache key of this config hashes."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.key_dict() if isinstance(value, Config) else _plain(value)
        return out


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None if f.default is dataclasses.MISSING else f.default


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def setting(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
            short: str | None = None, choices: tuple | None = None, runtime: bool = False, cli: bool = True,
            repeat: bool = False, metavar: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A Config field with its command-line declaration.

    Args:
        help: the flag's help text. flag: its long spelling (default `--field-name`); short: e.g. "-n".
        choices: allowed values on the command line. runtime: changes how the job runs (where it writes,
            threads, device), never what it computes; left out of cache keys. cli: False keeps it off the
            command line (mappings and nested configs are set in YAML). repeat: the flag may be given several
            times, each adding one item (a tuple field). metavar: the value's name in --help.
    """
    metadata = {"help": help, "flag": flag, "short": short, "choices": choices, "runtime": runtime, "cli": cli,
                "repeat": repeat, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def runtime_fields(cls: type[Config]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime"))


def _cli_fields(cls: type[Config]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        nested = isinstance(hint, type) and issubclass(hint, Config)
        if not f.metadata.get("cli", True) or nested or hint is dict or typing.get_origin(hint) is dict:
            continue
        yield f, hint


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config], *, config_file: str | None = None
                         ) -> None:
    """One flag per field of `cls` (unset flags stay out of the namespace, so YAML values and defaults win)."""
    if config_file is not None:
        parser.add_argument("--config", help=config_file)
    for f, hint in _cli_fields(cls):
        names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-")]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help") or ""
        if hint is bool:
            parser.add_argument(*names, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                                help=help_text)
            continue
        if default not in (None, "", ()) and "%(default)" not in help_text:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text = f"{help_text} (default {shown})" if help_text else f"default {shown}"
        metavar = None if f.metadata.get("choices") else f.metadata.get("metavar") or f.name.upper()
        parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, choices=f.metadata.get("choices"),
                            action="append" if f.metadata.get("repeat") else "store",
                            help=help_text.replace("%", "%%"), metavar=metavar)


def config_from_args(args: argparse.Namespace, cls: type[T], section: str) -> T:
    """`--config FILE` (its `section:` mapping, or its top level), then every flag given, into one `cls`."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = find_config(args.config)
        raw = load_yaml(path)
        data = load_yaml(path, section) if section in raw else raw
    for f, _ in _cli_fields(cls):
        if hasattr(args, f.name):
            data[f.name] = getattr(args, f.name)
    cfg = cls.from_dict(data, where=section)
    _check_devices_here(cfg)
    return cfg


def _check_devices_here(cfg: Config, where: str = "") -> None:
    """A job started from the command line runs on this machine: every `device` it names must exist here (a config
    built in Python or read from a recipe may name a GPU this machine lacks)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Config):
            _check_devices_here(value, f"{where}{f.name}.")
        elif f.name == "device" and isinstance(value, str):
            check_device(value, f"{where}{f.name}", here=True)


CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def find_config(name: str | Path) -> Path:
    """A YAML file by path, or a shipped recipe by bare name (`zephyr` → rsearch/configs/zephyr.yaml)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.parent == Path(".") and (CONFIGS_DIR / f"{p.stem}.yaml").is_file() and p.suffix in ("", ".yaml"):
        return CONFIGS_DIR / f"{p.stem}.yaml"
    shipped = ", ".join(sorted(x.stem for x in CONFIGS_DIR.glob("*.yaml")))
    raise RsearchError(f"config file not found: {p} (shipped recipes, by name: {shipped})")


MAX_CONFIG_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: `*name` can make a kilobyte of YAML expand to gigabytes (a "billion laughs"),
    and a config never needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed in rsearch configs (line "
                                 f"{event.start_mark.line + 1}); write the value out")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Reads a YAML mapping (optionally one top-level section of it) with one-line errors; at most 1 MiB, no
    aliases."""
    p = Path(path)
    if not p.is_file():
        raise RsearchError(f"config file not found: {p}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise RsearchError(f"{p}: {p.stat().st_size:,} bytes is too large for a config file (at most 1 MiB)")
    try:
        data = yaml.load(p.read_bytes().decode("utf-8"), Loader=_NoAliasLoader) or {}
    except UnicodeDecodeError as e:
        raise RsearchError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise RsearchError(f"{p}: not valid YAML ({one_line(e)})") from None
    if not isinstance(data, dict):
        raise RsearchError(f"{p}: expected a mapping at the top level")
    if section is not None:
        if section not in data:
            return {}
        data = data[section]
        if data is None:
            raise RsearchError(f"{p}: section {section!r} is empty (give its settings, or leave the section out)")
        if not isinstance(data, dict):
            raise RsearchError(f"{p}: section {section!r} must be a mapping of settings, got a "
                               f"{type(data).__name__}")
    return data


def check(condition: bool, message: str) -> None:
    """Raises RsearchError(message) unless condition holds: the one-liner validators use."""
    if not condition:
        raise RsearchError(message)


# ----- validators shared by jobs' __post_init__ -----

def check_device(device: str, field: str = "device", *, here: bool = False) -> None:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`; anything else is refused by name. With `here`, the device must also
    exist on this machine."""
    if device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise RsearchError(f"{field}: unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise RsearchError(f"{field}: unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    if not here:
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise RsearchError(f"{field}: {device!r} requested but no CUDA GPU is available")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RsearchError(f"{field}: {device!r} does not exist ({torch.cuda.device_count()} GPUs)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RsearchError(f"{field}: {device!r} requested but MPS is not available")


def check_positive(**values: float | None) -> None:
    """Each named value (None: unset, allowed) must be at least 1: batch sizes, counts, budgets."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise RsearchError(f"{name}: must be at least 1, got {value}")
