"""Stage configs: one dataclass per stage, loaded from a YAML preset plus ``key=value`` overrides.

Presets live in ``configs/<stage>/<name>.yaml`` (installed as ``charops.configs``); a config
argument is either a preset name (``tiny-cpu``) or a path to a YAML file. Every field of a stage
dataclass carries ``metadata={"help": ...}``; an unknown key is an error naming the file and the
closest known key, before any work starts::

    cfg = load_config(SFTConfig, "tiny-cpu", ["learning_rate=1e-4", "lora.r=8"])
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from charops.errors import CharopsError, ConfigError

T = TypeVar("T")


def preset_dir(stage: str) -> Path:
    """Folder of the committed presets of one stage (``configs/<stage>``)."""
    return Path(str(resources.files("charops.configs"))) / stage


def list_presets(stage: str) -> list[str]:
    d = preset_dir(stage)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_config_path(stage: str, source: str | Path) -> Path:
    """A path that exists wins; otherwise ``source`` names a preset of ``stage``."""
    p = Path(source)
    if p.is_file():
        return p
    preset = preset_dir(stage) / f"{source}.yaml"
    if preset.is_file():
        return preset
    known = ", ".join(list_presets(stage)) or "none"
    raise ConfigError(f"config '{source}': no such file and no {stage} preset of that name "
                      f"(presets: {known})")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    return data


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is both a value and a section")
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


class _Where:
    """Where a config value came from, for error messages: the ``key=value`` override that set
    it (``override 'lora.r=x'``), else the file and the key path (``c.yaml: key lora.r``)."""

    def __init__(self, source: str, overrides: list[str]):
        self.source = source
        self.items = {item.partition("=")[0].strip(): item for item in overrides}

    def override(self, path: tuple[str, ...]) -> str | None:
        for i in range(len(path), 0, -1):  # a whole section may have been set at once
            item = self.items.get(".".join(path[:i]))
            if item is not None:
                return item
        return None

    def __call__(self, path: tuple[str, ...]) -> str:
        item = self.override(path)
        if item is not None:
            return f"override '{item}'"
        return f"{self.source}: key {'.'.join(path)}" if path else self.source

    def unknown(self, path: tuple[str, ...], hint: str) -> str:
        item = self.override(path)
        if item is not None:
            return f"override '{item}': unknown key '{path[-1]}'{hint}"
        return f"{self.source}: unknown key '{'.'.join(path)}'{hint}"


def _coerce(value: Any, tp: Any, where: _Where, path: tuple[str, ...], index: str = "") -> Any:
    """Check and convert one value against a field's annotation."""
    origin = typing.get_origin(tp)
    at = f"{where(path)}{index}"
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, path, index)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{at}: invalid value {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{at}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {value!r}")
        return _build(tp, value, where, path)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{at}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, where, path, f"{index}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{at}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{at}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{at}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{at}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{at}: expected a string, got {value!r}")
        return str(value)
    return value


def _check_keys(cls: type, data: dict, where: _Where, path: tuple[str, ...] = ()) -> None:
    """Unknown keys in ``data`` (recursing into nested config sections) are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{'.'.join((*path, close[0]))}'?" if close else ""
            raise ConfigError(where.unknown((*path, key), hint))
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _check_keys(hints[key], value, where, (*path, key))


def _build(cls: type[T], data: dict, where: _Where, path: tuple[str, ...] = ()) -> T:
    _check_keys(cls, data, where, path)
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(value, hints[key], where, (*path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where(path)}: {exc}") from None


# A stage's validate() names the field first ("learning_rate: must be above 0, got -1").
_FIELD_FIRST = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


def load_config(cls: type[T], source: str | Path | dict | None = None,
                overrides: list[str] | tuple[str, ...] = (), stage: str | None = None) -> T:
    """Build ``cls`` from a preset name, YAML path or dict, then apply ``key=value`` overrides.

    Errors name where the bad value came from: the override (``override 'max_steps=x'``), or
    the file and the key path (``configs/sft/tiny-cpu.yaml: key lora.r``).
    """
    stage = stage or getattr(cls, "stage", None) or cls.__name__.removesuffix("Config").lower()
    if source is None or isinstance(source, dict):
        data: dict = dict(source or {})
        label = f"{stage} config"
    else:
        path = resolve_config_path(stage, source)
        data = read_yaml(path)
        label = str(path)
    overrides = list(overrides)
    extra = parse_overrides(overrides)
    where = _Where(label, overrides)
    _check_keys(cls, extra, where)  # name the command line, not the preset, for a typo there
    cfg = _build(cls, _merge(data, extra), where)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            m = _FIELD_FIRST.match(str(exc))
            names = {f.name for f in dataclasses.fields(cls)}
            if m is None or m.group(1).split(".")[0] not in names:
                raise
            item = where.override(tuple(m.group(1).split(".")))
            raise ConfigError(f"{f'override {item!r}' if item else where.source}: {exc}") from None
    return cfg


def to_dict(cfg: Any) -> dict:
    """A config as plain data (for summaries, manifests and KFP parameters)."""
    return dataclasses.asdict(cfg)


def stage_main(cls: type[T], run: Any, argv: list[str] | None, default: str,
               flags: dict[str, str] | None = None) -> Any:
    """The ``python -m charops.<area>.<stage>`` command line of a stage module.

    ``--config PRESET [--FLAG VALUE ...] [key=value ...]``, where each ``flags`` entry maps an
    option (``--output``) to the config key it sets (``output_dir``); runs ``run(config)`` and
    returns its result. A user error exits with a one-line ``error: ...``, as the CLI does.
    """
    module = run.__module__
    ap = argparse.ArgumentParser(prog=f"python -m {module}",
                                 description=(sys.modules[module].__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default=default, help=f"preset name (configs/{cls.stage}/) or YAML path")
    for flag, key in (flags or {}).items():
        ap.add_argument(flag, dest=key, help=f"sets {key}")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + [f"{key}={getattr(args, key)}" for key in (flags or {}).values()
                                        if getattr(args, key) is not None]
    try:
        return run(load_config(cls, args.config, overrides))
    except CharopsError as exc:
        raise SystemExit(f"error: {' '.join(str(exc).split())}") from None
