"""Pipeline versions: ``<charops version>-<8 hex of the compiled spec's sha256>``.

A compiled pipeline YAML carries its version twice, so that it survives every way the file
travels:

* a comment line ``# charops-pipeline-version: 0.1.0-1a2b3c4d`` in the header that KFP's
  compiler writes (for people and for ``git diff``), and
* the end of ``pipelineInfo.description`` (``... (charops pipeline version 0.1.0-1a2b3c4d)``),
  which is part of the spec itself, so it survives ``kfp.components.load_component_from_file``
  and the upload to the KFP API server, where comments are dropped.

The hash covers the parsed YAML documents (pipeline spec and, if present, the kubernetes
platform spec) with the stamp removed, as canonical JSON: formatting and comments do not change
it, any change to what the cluster would run does. ``charops submit`` names the pipeline
version on the server after it and uploads only versions the server lacks::

    from charops.pipeline.version import stamp, read_version, compute_version
    text = stamp(open("pipelines/full.yaml").read())
    read_version("pipelines/full.yaml")        # '0.1.0-1a2b3c4d' or None if never stamped
    compute_version(text)                      # the version the content has (stamp excluded)

Whether a committed YAML is stale is ``charops.pipeline.compile.stale`` (``charops compile
--check``): it compares the file with a fresh compilation, byte for byte.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

import charops
from charops.errors import CharopsError
from charops.io import dumps_json, sha256_bytes

COMMENT_PREFIX = "# charops-pipeline-version:"
_DESC_STAMP = re.compile(r"\s*\(charops pipeline version [^()\s]+\)\s*$")
_COMMENT_STAMP = re.compile(r"^# charops-pipeline-version:\s*(\S+)\s*$", re.MULTILINE)


def _load_documents(yaml_text: str, where: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(yaml_text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise CharopsError(f"{where}{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not docs or not isinstance(docs[0], dict) or not isinstance(docs[0].get("pipelineInfo"), dict):
        raise CharopsError(f"{where}: not a compiled KFP pipeline (no pipelineInfo); compile it "
                           "with `charops compile` or kfp.compiler.Compiler")
    if not all(isinstance(d, dict) for d in docs):
        raise CharopsError(f"{where}: every YAML document must be a mapping")
    return docs


def _strip_description(description: str) -> str:
    return _DESC_STAMP.sub("", description)


def _unstamped(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the documents with the description stamp removed (the hash's input)."""
    first = dict(docs[0])
    info = dict(first["pipelineInfo"])
    if "description" in info:
        base = _strip_description(str(info["description"]))
        if base:
            info["description"] = base
        else:  # the stamp was the whole description: the unstamped spec had none
            del info["description"]
    first["pipelineInfo"] = info
    return [first, *docs[1:]]


def _version_of(docs: list[dict[str, Any]]) -> str:
    digest = sha256_bytes(dumps_json(_unstamped(docs)).encode("utf-8"))
    return f"{charops.__version__}-{digest[:8]}"


def compute_version(yaml_text: str, where: str = "pipeline YAML") -> str:
    """The version a compiled pipeline YAML should carry (whether or not it is stamped)."""
    return _version_of(_load_documents(yaml_text, where))


def stamp(yaml_text: str, where: str = "pipeline YAML") -> str:
    """Return ``yaml_text`` with its version written into the header comment and description.

    Stamping is idempotent: an old stamp is replaced, and stamping a stamped text is a no-op.
    The documents are re-dumped the way KFP's compiler dumps them (``yaml.dump_all`` with
    sorted keys), so an unstamped compiler output changes only in the stamped lines.
    """
    docs = _load_documents(yaml_text, where)
    version = _version_of(docs)
    docs = _unstamped(docs)
    info = docs[0]["pipelineInfo"]
    base = info.get("description", "")
    info["description"] = (f"{base} " if base else "") + f"(charops pipeline version {version})"

    header = []
    for line in yaml_text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith(COMMENT_PREFIX):
            header.append(line)
    # Last line of the header: kfp's loader reads the description from the header's third
    # line (kfp.dsl.structures.ComponentSpec.from_yaml_documents), so the lines above stay put.
    header.append(f"{COMMENT_PREFIX} {version}")
    return "\n".join(header) + "\n" + yaml.safe_dump_all(docs, sort_keys=True)


def read_version(path: str | os.PathLike) -> str | None:
    """The version stamped into a pipeline file, or None when it was never stamped.

    The header comment is read first; a file without it (e.g. a spec downloaded back from
    the API server, which drops comments) is read from ``pipelineInfo.description``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CharopsError(f"{path}: no such pipeline file") from None
    return version_in_text(text, str(path))


def version_in_text(yaml_text: str, where: str = "pipeline YAML") -> str | None:
    match = _COMMENT_STAMP.search(yaml_text.split("\n---", 1)[0])
    if match:
        return match.group(1)
    description = str(_load_documents(yaml_text, where)[0]["pipelineInfo"].get("description", ""))
    found = re.search(r"\(charops pipeline version ([^()\s]+)\)\s*$", description)
    return found.group(1) if found else None
