"""Configuration: frozen dataclasses, read from and written to TOML, with dotted overrides.

Every run folder gets the resolved config as `config.toml`; `load_config(cls, path, overrides)`
rebuilds it. A wrong key or value is a `ConfigError` that names the key and says what to fix.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from libcem.errors import LibcemError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(LibcemError):
    """A config key or value that is wrong: the message names it."""


def check(cond: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming `key` unless `cond` holds; used in `__post_init__` range checks."""
    if not cond:
        raise ConfigError(f"config '{key}': {message}")


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain nested dict (None values are dropped: TOML has no null)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        if value is not None:
            out[f.name] = value
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config '{key}' must be a table, got {value!r}")
        return from_dict(hint, value, prefix=key + ".")
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, item, key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config '{key}' must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"config '{key}' must be an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"config '{key}' must be an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"config '{key}' must be a number, got {value!r}") from None
    if hint is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Nested dict -> dataclass, checking every key and coercing every value to its type."""
    if not isinstance(data, dict):
        raise ConfigError(f"config '{prefix.rstrip('.') or cls.__name__}' must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: "
            + ", ".join(prefix + n for n in sorted(names))
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def with_saved_defaults(cls: type, data: dict) -> dict:
    """A complete config of `cls` that an earlier libcem saved (a model's config.json, a run's
    config.toml), with each key it lacks whose default has changed since filled with the value that
    libcem used then (the dataclass's `SAVED_DEFAULTS`), so an old model or run loads as it was
    trained. Only for saved configs: a user's partial config takes today's defaults."""
    if not isinstance(data, dict):
        return data
    out = {**getattr(cls, "SAVED_DEFAULTS", {}), **data}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if isinstance(out.get(f.name), dict) and dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = with_saved_defaults(hints[f.name], out[f.name])
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=2e-4' -> (['optim', 'lr'], 2e-4); the value is parsed as a TOML value when it can be."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def merge_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a nested dict (a new dict; the input is left alone)."""
    out = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return out


def expand_sizes(cls: type, layer: dict) -> dict:
    """A config layer with every named size spelled out: in a table of a dataclass that has a `SIZES`
    registry, `size = "NAME"` stands for that size's settings, under the layer's own explicit ones."""
    out = dict(layer)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if isinstance(out.get(f.name), dict) and dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = expand_sizes(hints[f.name], out[f.name])
    sizes = getattr(cls, "SIZES", None)
    if sizes and isinstance(out.get("size"), str) and out["size"] in sizes:
        out = {**sizes[out["size"]], **out}
    return out


def _deep_copy(data: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def build_config(cls: type[T], base: dict | None = None, overrides: list[str] = ()) -> T:
    """Defaults of `cls`, then a base dict (e.g. from TOML or a preset), then dotted overrides in order.

    Each layer's named sizes are spelled out first (`expand_sizes`), so a later layer's size replaces an
    earlier one's settings while a setting given beside a size wins over it."""
    data = to_dict(cls())
    _deep_update(data, expand_sizes(cls, base or {}))
    for text in overrides:
        _deep_update(data, expand_sizes(cls, merge_overrides({}, [text])))
    return from_dict(cls, data)


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def stage_base(two_stage: dict, stage: str, stages: tuple[str, ...] = ("tokenizer", "prior")) -> dict:
    """One stage's config dict from a two-stage one: the shared tables, with the stage's own table over them."""
    base = _deep_copy({k: v for k, v in two_stage.items() if k not in stages})
    _deep_update(base, _deep_copy(two_stage.get(stage, {})))
    return base


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def dumps_toml(cfg: Any) -> str:
    return tomli_w.dumps(to_dict(cfg))


def load_config(cls: type[T], path: str | Path, overrides: list[str] = ()) -> T:
    return build_config(cls, read_toml(path), overrides)


def replace(cfg: T, **sections: dict) -> T:
    """A copy of `cfg` with some fields of some sections changed: replace(cfg, train={'steps': 5})."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **vals) for name, vals in sections.items()}
    return dataclasses.replace(cfg, **changes)
