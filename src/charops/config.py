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


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert one value against a field's annotation."""
    origin = typing.get_origin(tp)
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
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _check_keys(cls: type, data: dict, where: str) -> None:
    """Unknown keys in ``data`` (recursing into nested config sections) are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _check_keys(hints[key], value, where)


def _build(cls: type[T], data: dict, where: str) -> T:
    _check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}: {key}" if "." not in where else f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None


def load_config(cls: type[T], source: str | Path | dict | None = None,
                overrides: list[str] | tuple[str, ...] = (), stage: str | None = None) -> T:
    """Build ``cls`` from a preset name, YAML path or dict, then apply ``key=value`` overrides."""
    stage = stage or getattr(cls, "stage", None) or cls.__name__.removesuffix("Config").lower()
    if source is None:
        data: dict = {}
        where = f"{stage} config"
    elif isinstance(source, dict):
        data = dict(source)
        where = f"{stage} config"
    else:
        path = resolve_config_path(stage, source)
        data = read_yaml(path)
        where = str(path)
    extra = parse_overrides(list(overrides))
    _check_keys(cls, extra, "override")  # name the command line, not the preset, for a typo there
    cfg = _build(cls, _merge(data, extra), where)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
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
