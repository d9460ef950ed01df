"""Read a compiled KFP pipeline YAML: its name, description, version and root parameters.

A compiled pipeline is one YAML document (the PipelineSpec) or two (the second is the
kubernetes platform spec that kfp-kubernetes adds). ``charops submit`` uses this to check and
type ``--param k=v`` values before anything is sent anywhere::

    from charops.pipeline.spec import load_spec, parse_params
    spec = load_spec("pipelines/full.yaml")
    spec.name, spec.version, spec.parameters["accelerator_limit"].type   # 'NUMBER_INTEGER'
    parse_params(spec, ["accelerator_limit=8", 'sft_overrides=["max_steps=20"]'])
    # {'accelerator_limit': 8, 'sft_overrides': ['max_steps=20']}
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from charops.errors import CharopsError
from charops.pipeline.version import _load_documents, _strip_description, version_in_text

# The parameter types of KFP's PipelineSpec (pipeline_spec.proto ParameterType).
PARAMETER_TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class Parameter:
    """One root input parameter of a pipeline."""

    name: str
    type: str
    default: Any = None
    optional: bool = False
    description: str = ""

    @property
    def required(self) -> bool:
        return not self.optional and self.default is None


@dataclass
class PipelineSpec:
    """What charops needs to know about a compiled pipeline file."""

    path: Path
    name: str
    description: str
    version: str | None
    parameters: dict[str, Parameter] = field(default_factory=dict)
    has_platform_spec: bool = False
    text: str = ""


def load_spec(path: str | os.PathLike) -> PipelineSpec:
    """Load and check a compiled pipeline YAML; any problem is a one-line error naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CharopsError(f"{path}: no such pipeline file") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise CharopsError(f"{path}: not a readable pipeline YAML ({exc.__class__.__name__})") from None
    docs = _load_documents(text, str(path))
    if len(docs) > 2 or (len(docs) == 2 and "platforms" not in docs[1]):
        raise CharopsError(f"{path}: expected a pipeline spec and at most one platform spec "
                           f"document, found {len(docs)} documents")
    pipeline = docs[0]
    info = pipeline["pipelineInfo"]
    if not info.get("name") or not isinstance(pipeline.get("root"), dict):
        raise CharopsError(f"{path}: not a compiled KFP pipeline (pipelineInfo.name and root "
                           "are required)")
    params: dict[str, Parameter] = {}
    raw = (pipeline["root"].get("inputDefinitions") or {}).get("parameters") or {}
    for name, decl in raw.items():
        ptype = decl.get("parameterType") if isinstance(decl, dict) else None
        if ptype not in PARAMETER_TYPES:
            raise CharopsError(f"{path}: root parameter '{name}' has unknown parameterType "
                               f"{ptype!r} (expected one of {', '.join(PARAMETER_TYPES)})")
        default = decl.get("defaultValue")
        if default is not None:
            # KFP writes integer defaults as floats (3 -> 3.0); give them back their type.
            if ptype == "NUMBER_INTEGER" and isinstance(default, float) and default.is_integer():
                default = int(default)
        params[name] = Parameter(name=name, type=ptype, default=default,
                                 optional=bool(decl.get("isOptional", False)),
                                 description=decl.get("description", ""))
    return PipelineSpec(path=path, name=str(info["name"]),
                        description=_strip_description(str(info.get("description", ""))),
                        version=version_in_text(text, str(path)), parameters=params,
                        has_platform_spec=len(docs) == 2, text=text)


def convert(value: str, ptype: str, where: str) -> Any:
    """Convert one command-line string to a KFP parameter type (``where`` names it in errors)."""
    if ptype == "STRING":
        return value
    if ptype == "NUMBER_INTEGER":
        try:
            return int(value)
        except ValueError:
            pass
        try:  # "1e3" and "2.0" are integers written as floats
            as_float = float(value)
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer():
            return int(as_float)
        raise CharopsError(f"{where}: expected an integer, got '{value}'")
    if ptype == "NUMBER_DOUBLE":
        try:
            return float(value)
        except ValueError:
            raise CharopsError(f"{where}: expected a number, got '{value}'") from None
    if ptype == "BOOLEAN":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise CharopsError(f"{where}: expected true or false, got '{value}'")
    # LIST / STRUCT: JSON first (what KFP shows), YAML flow style as a convenience ([a, b]).
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
    want, kind = (list, "a JSON list like [1, 2]") if ptype == "LIST" else (dict, 'a JSON object like {"k": 1}')
    if not isinstance(parsed, want):
        raise CharopsError(f"{where}: expected {kind}, got '{value}'")
    return parsed


def parse_params(spec: PipelineSpec, items: list[str] | tuple[str, ...],
                 check_required: bool = True) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: typed v}`` for the pipeline's root parameters.

    Unknown names, repeated names, values of the wrong type and (with ``check_required``)
    required parameters left out are one-line errors naming the pipeline file.
    """
    out: dict[str, Any] = {}
    where = f"{spec.path}"
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CharopsError(f"--param '{item}': expected NAME=VALUE")
        if key not in spec.parameters:
            known = ", ".join(sorted(spec.parameters)) or "none"
            close = difflib.get_close_matches(key, list(spec.parameters), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CharopsError(f"{where}: pipeline '{spec.name}' has no parameter '{key}'{hint} "
                               f"(parameters: {known})")
        if key in out:
            raise CharopsError(f"--param {key} given twice")
        param = spec.parameters[key]
        out[key] = convert(raw, param.type, f"--param {key} ({param.type})")
    if check_required:
        missing = [p.name for p in spec.parameters.values() if p.required and p.name not in out]
        if missing:
            raise CharopsError(f"{where}: pipeline '{spec.name}' needs "
                               + ", ".join(f"--param {m}=..." for m in missing))
    return out
