"""Compile the charops pipelines (``pipelines/<name>.py``) to versioned KFP YAML.

Each ``pipelines/<name>.py`` defines ``build(cluster: ClusterConfig)`` returning its
``@dsl.pipeline`` function; compiling it with a cluster config (``configs/pipeline/cluster.yaml``
by default) gives ``pipelines/<name>.yaml``, stamped with its version (charops version + short
hash of the spec, see charops.pipeline.version). The compiled YAML is committed; ``--check``
recompiles into memory and lists the files that differ::

    charops compile --all                 # regenerate every pipelines/*.yaml
    charops compile full --check          # non-zero exit if pipelines/full.yaml is stale
    charops compile full --config my-cluster.yaml --output /tmp/full.yaml
    python -c "from charops.pipeline.compile import compile_pipeline; compile_pipeline('full')"

The output depends on ``CHAROPS_IMAGE`` (the components' base image): leave it unset for the
committed files.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

import charops
from charops.errors import CharopsError
from charops.io import write_text
from charops.pipeline.tasks import ClusterConfig, load_cluster_config
from charops.pipeline.version import stamp


def pipelines_dir() -> Path:
    """``./pipelines`` when run from a checkout, else the one beside the installed sources."""
    here = Path.cwd() / "pipelines"
    if here.is_dir():
        return here
    return Path(charops.__file__).resolve().parents[2] / "pipelines"


def pipeline_names(folder: Path | None = None) -> list[str]:
    """Names of the pipelines (``<name>.py`` files defining ``build``), sorted."""
    folder = folder or pipelines_dir()
    return sorted(p.stem for p in folder.glob("*.py")
                  if not p.name.startswith("_") and "def build(" in p.read_text(encoding="utf-8"))


def resolve_source(name_or_py: str | os.PathLike) -> Path:
    """A pipeline name (``full``) or the path of its ``.py`` file."""
    p = Path(name_or_py)
    if p.suffix == ".py":
        if not p.is_file():
            raise CharopsError(f"{p}: no such pipeline file")
        return p
    candidate = pipelines_dir() / f"{name_or_py}.py"
    if not candidate.is_file():
        known = ", ".join(pipeline_names()) or "none"
        raise CharopsError(f"no pipeline named '{name_or_py}' in {pipelines_dir()} (pipelines: {known})")
    return candidate


def load_pipeline(source: Path, cluster: ClusterConfig):
    """Import ``source`` as a module and build its pipeline function for ``cluster``."""
    module_name = f"charops_pipeline_{source.stem}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # kfp inspects the components' modules by name
    spec.loader.exec_module(module)
    if "build" not in vars(module):
        raise CharopsError(f"{source}: defines no build(cluster) function returning the pipeline")
    return module.build(cluster)


def compile_text(name_or_py: str | os.PathLike, cluster: ClusterConfig | None = None) -> str:
    """The stamped YAML text of one pipeline (nothing is written)."""
    from kfp import compiler

    source = resolve_source(name_or_py)
    pipeline = load_pipeline(source, cluster or load_cluster_config())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{source.stem}.yaml"
        compiler.Compiler().compile(pipeline, str(out))
        return stamp(_canonical_header(out.read_text(encoding="utf-8")), str(source))


_HEADER_DEFAULT = re.compile(r"^#    (\w+): (\w+) \[Default: .*\]$")


def _canonical_header(text: str) -> str:
    """KFP's header comment with list/dict defaults written in a fixed key order.

    KFP prints those defaults from a protobuf Struct, whose key order changes from one Python
    process to the next; the spec body is dumped with sorted keys, so it is the reference.
    """
    params = next(yaml.safe_load_all(text))["root"].get("inputDefinitions", {}).get("parameters", {})
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        m = _HEADER_DEFAULT.match(line)
        if m and isinstance(params.get(m.group(1), {}).get("defaultValue"), (dict, list)):
            lines[i] = f"#    {m.group(1)}: {m.group(2)} [Default: {params[m.group(1)]['defaultValue']!r}]"
    return "\n".join(lines)


def compile_pipeline(name_or_py: str | os.PathLike, output_yaml: str | os.PathLike | None = None,
                     cluster: ClusterConfig | None = None) -> Path:
    """Compile one pipeline to ``output_yaml`` (default: beside its .py); the path written."""
    source = resolve_source(name_or_py)
    output = Path(output_yaml) if output_yaml else source.with_suffix(".yaml")
    write_text(output, compile_text(source, cluster))
    return output


def stale(name_or_py: str | os.PathLike, yaml_path: str | os.PathLike | None = None,
          cluster: ClusterConfig | None = None) -> bool:
    """Whether the committed YAML differs from a fresh compilation (byte for byte)."""
    source = resolve_source(name_or_py)
    path = Path(yaml_path) if yaml_path else source.with_suffix(".yaml")
    if not path.is_file():
        return True
    return path.read_text(encoding="utf-8") != compile_text(source, cluster)
