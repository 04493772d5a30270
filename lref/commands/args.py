"""The one place where `lref`'s command line is built: argparse parsers from the subcommands' dataclasses.

The idea of transformers' `HfArgumentParser` and trl's `TrlParser`: each subcommand's flags are one dataclass
whose fields carry their help (and any other argparse keyword) in `field.metadata`; the parser, `--config
FILE.yaml` defaults and the recipe runner's `--no-X` and known keys all come from those fields. It is written
here rather than imported because `transformers.hf_argparser` imports transformers (`lref --help` must not), and
because lref's flags keep their argparse behaviour: `--X/--no-X` for booleans that default true, `store_true`
otherwise, `append`/`extend` list flags, positional arguments and a required pair of mutually exclusive flags.

Field conventions: no default = a required flag; `bool` = a switch; `Literal[...]` = choices; `list[T]` needs
`action` (append/extend) or `nargs` in the metadata; metadata `positional=True` makes a positional argument and
`exclusive="GROUP"` puts the flag in a mutually exclusive group that must be given (unless a config sets one).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

from lref.config import ConfigError, load_yaml

LOCAL_KEYS = ("positional", "exclusive")  # metadata read here, not passed on to argparse


def arg(help: str, default: Any = dataclasses.MISSING, **argparse_kwargs) -> Any:
    """A dataclass field that is a flag: `x: int = arg("what x does", 3)`; list defaults are copied per instance."""
    meta = {"help": help, **argparse_kwargs}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fill(cls: type, source: object, **overrides):
    """A library config dataclass `cls` from a flags dataclass: each field from `overrides`, else from the
    source's field of the same name, else the field's own default."""
    shared = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if hasattr(source, f.name)}
    return cls(**{**shared, **overrides})


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its path (`"distill ranker"`), flags dataclass, runner and one-line summary."""

    path: str
    args: type
    run: Callable[..., int]
    summary: str
    details: str | None = None
    config_file: bool = True  # takes `--config FILE.yaml`
    accepts_extra: bool = False  # unknown flags go to run(args, extra) instead of being an error


@dataclasses.dataclass(frozen=True)
class Group:
    """A subcommand that only holds subcommands (`lref distill STEP`)."""

    name: str
    summary: str
    dest: str
    metavar: str


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help starts with the one line saying what the command does."""

    def __init__(self, *a, summary: str | None = None, **kw):
        super().__init__(*a, **kw)
        self.summary = summary

    def format_help(self) -> str:
        text = super().format_help()
        if not self.summary:
            return text
        return f"{self.summary[0].upper()}{self.summary[1:]}.\n\n{text}"


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _unwrap(hint) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), len(rest) < len(typing.get_args(hint))
    return hint, False


def is_switch(hint) -> bool:
    return _unwrap(hint)[0] is bool


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_strings(cls: type) -> list[str]:
    """Every option string the dataclass makes, `--no-X` forms included."""
    out = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            continue
        out.append(flag_name(f.name))
        if is_switch(hints[f.name]) and f.default is True:
            out.append("--no-" + flag_name(f.name)[2:])
    return out


def argparse_kwargs(f: dataclasses.Field, hint, default) -> dict:
    """The add_argument keywords of one field (its default may have come from a config file)."""
    kw = {k: v for k, v in f.metadata.items() if k not in LOCAL_KEYS}
    base, _ = _unwrap(hint)
    if typing.get_origin(base) is Literal:
        kw["choices"] = list(typing.get_args(base))
    elif base is bool:
        kw["action"] = argparse.BooleanOptionalAction if f.default is True else "store_true"
    elif typing.get_origin(base) is list:
        kw.setdefault("type", typing.get_args(base)[0])
    else:
        kw.setdefault("type", base)
    if default is dataclasses.MISSING:
        if not f.metadata.get("exclusive") and not f.metadata.get("positional"):
            kw["required"] = True
    else:
        kw["default"] = default
    return kw


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, config: dict | None = None) -> None:
    """Add one flag per field of `cls`; values from a config file replace defaults and satisfy `required`."""
    config = config or {}
    hints = field_types(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = config.get(f.name, default)
        kw = argparse_kwargs(f, hints[f.name], default)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, **kw)
            continue
        target = parser
        group = f.metadata.get("exclusive")
        if group:
            if group not in groups:
                members = [g.name for g in dataclasses.fields(cls) if g.metadata.get("exclusive") == group]
                given = any(config.get(name) is not None for name in members)
                groups[group] = parser.add_mutually_exclusive_group(required=not given)
            target = groups[group]
        target.add_argument(flag_name(f.name), **kw)


def config_values(path: str | Path, cls: type) -> dict:
    """A `--config` file's keys (dashes or underscores) as field names; unknown keys and bad types name the file."""
    hints = field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in load_yaml(path).items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown key {key!r} (flags of this command: {sorted(known)})")
        out[name] = check_value(path, key, value, hints[name])
    return out


def check_value(path, key, value, hint):
    """A config value of the field's type (strings are converted as on the command line), else a ConfigError."""
    base, optional = _unwrap(hint)
    if value is None:
        return value
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        items = value if isinstance(value, list) else [value]
        return [check_value(path, key, v, item) for v in items]
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            raise ConfigError(f"{path}: key {key!r}: {value!r} is not one of {list(typing.get_args(base))}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: key {key!r}: expected true or false, got {value!r}")
        return value
    if base in (int, float) and not isinstance(value, bool):
        if isinstance(value, int) or (base is float and isinstance(value, float)):
            return base(value)
        if isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: key {key!r}: expected {base.__name__}, got {value!r}")
    if base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{path}: key {key!r}: expected {getattr(base, '__name__', base)}, got {value!r}")
