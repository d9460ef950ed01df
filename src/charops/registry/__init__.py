"""Model registry: published models, their numbers and lineage, in the artifact store.

Layout inside a store (``charops.storage.open_store``: a local directory or any S3)::

    models/<name>/<version>/model/...      the model directory (Hugging Face files)
    models/<name>/<version>/reports/...    evaluation results (metrics.json, report.md, ...)
    models/<name>/<version>/card.json      the model card (charops.registry.card), and
    models/<name>/<version>/README.md      the same for people
    registry/<name>/<version>.json         the entry: name, version, model sha256, metrics,
                                           lineage (dataset hash, base model, pipeline version,
                                           run id), where the model, reports and card are
    registry/<name>/stages/<seq>.json      stage history (charops.registry.stages)

Versions are increasing integers per name (1, 2, ...; consecutive unless a registration died
after claiming its number), so "the latest" is obvious to people and to ``charops deploy``. Registering content that is already registered (same model
sha256) returns the existing entry instead of minting a new version: a retried or cached
pipeline step does not create duplicates. The entry is written last, after every file of the
model: an upload that died half-way has no entry and is invisible to readers. Names become
Kubernetes names (an InferenceService per model), so they are DNS-1035 labels::

    from charops.registry import register, get_entry
    from charops.storage import open_store
    store = open_store(".charops/store")
    entry = register(store, "runs/dpo-model", "charops-chat", {"loss": 2.1},
                     {"dataset_sha256": "...", "base_model": "charops:tiny"})
    get_entry(store, "charops-chat")["version"]      # latest

Stages (``transition``, ``production``, ``rollback``, ...) are in :mod:`charops.registry.stages`,
the promotion gate in :mod:`charops.registry.gate`; both are re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import re
import tempfile
from pathlib import Path
from typing import Any

import charops
from charops.errors import CharopsError
from charops.io import sha256_tree
from charops.registry.card import build_card, card_markdown, read_inputs

# A DNS-1035 label (Kubernetes Service and InferenceService names): no '/', '.', '..' or '_'.
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")


class RegistryError(CharopsError):
    """A registry name, version or model directory is wrong."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RegistryError(f"model name '{name}': use 1-63 lowercase letters, digits or '-', "
                            "starting with a letter and ending with a letter or digit (it "
                            "becomes a Kubernetes name)")
    return name


def check_version(version: int | str) -> int:
    """A version number (a positive integer, given as such or as its digits)."""
    if isinstance(version, bool) or not (isinstance(version, int) and version > 0
                                         or VERSION_RE.match(str(version))):
        raise RegistryError(f"version '{version}': use a positive integer like 3")
    return int(version)


def card_key(name: str, version: int, filename: str = "card.json") -> str:
    return f"models/{check_name(name)}/{version}/{filename}"


def model_prefix(name: str, version: int) -> str:
    return f"models/{check_name(name)}/{version}/model"


def reports_prefix(name: str, version: int) -> str:
    return f"models/{check_name(name)}/{version}/reports"


def entry_key(name: str, version: int) -> str:
    return f"registry/{check_name(name)}/{version}.json"


def list_versions(store: Any, name: str) -> list[int]:
    """Registered versions of ``name``, ascending (empty when none)."""
    prefix = f"registry/{check_name(name)}/"
    # Entries only: the stage history lives in the same folder, under stages/.
    entry = re.compile(rf"^{re.escape(prefix)}([1-9][0-9]*)\.json$")
    return sorted(int(m.group(1)) for k in store.list(prefix) if (m := entry.match(k)))


def list_names(store: Any) -> list[str]:
    """Names with at least one registered version, sorted."""
    names = {k.split("/")[1] for k in store.list("registry/") if k.count("/") == 2}
    return sorted(n for n in names if NAME_RE.match(n) and list_versions(store, n))


def get_entry(store: Any, name: str, version: int | str = "latest") -> dict:
    """The entry of ``name`` at ``version`` (an integer or ``latest``)."""
    versions = list_versions(store, name)
    if not versions:
        raise RegistryError(f"model '{name}' is not registered in {store}; run a pipeline "
                            "with a register step first")
    if version == "latest":
        version = versions[-1]
    try:
        version = check_version(version)
    except RegistryError:
        raise RegistryError(f"model '{name}': version '{version}' is not an integer or "
                            "'latest'") from None
    if version not in versions:
        raise RegistryError(f"model '{name}' has no version {version} (versions: "
                            f"{', '.join(map(str, versions))})")
    return store.get_json(entry_key(name, version))


def _check_free(store: Any, name: str, version: int) -> None:
    if store.exists(entry_key(name, version)):
        raise RegistryError(f"model '{name}' version {version} was registered concurrently by "
                            "another run; retry the registration")


def register(store: Any, model_dir: str | Path, name: str, metrics: dict, lineage: dict,
             reports_dir: str | Path | None = None) -> dict:
    """Publish ``model_dir`` (and ``reports_dir``) as the next version of ``name``; the entry.

    ``metrics`` are the numbers the model is judged by (e.g. held-out loss, baseline loss);
    ``lineage`` says where it came from (dataset manifest hash, base model, pipeline version,
    run id). Both must be JSON-serialisable and are stored as given.
    """
    check_name(name)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise RegistryError(f"'{model_dir}' is not a model directory (no config.json); register "
                            "the output of a training step")
    if reports_dir is not None and not Path(reports_dir).is_dir():
        raise RegistryError(f"reports directory '{reports_dir}' does not exist")
    card_inputs = read_inputs(model_dir, reports_dir)  # bad input fails before any upload
    digest = sha256_tree(model_dir)
    versions = list_versions(store, name)
    for v in reversed(versions):
        existing = store.get_json(entry_key(name, v))
        if existing["model_sha256"] == digest:
            return existing
    # Claim the number before uploading (a conditional create): of two concurrent
    # registrations only one writes under models/<name>/<version>/. A registration that dies
    # leaves its claim, so the next one skips that number.
    claim = re.compile(rf"^registry/{name}/claims/([1-9][0-9]*)\.json$")
    claimed = [int(m.group(1)) for k in store.list(f"registry/{name}/") if (m := claim.match(k))]
    version = max([0, *versions, *claimed]) + 1
    if store.put_json_if_absent(f"registry/{name}/claims/{version}.json",
                                {"model_sha256": digest, "at": _dt.datetime.now(_dt.UTC).isoformat()}) is None:
        _check_free(store, name, version)
        raise RegistryError(f"model '{name}' version {version} is being registered by another "
                            "run; retry the registration")
    model_manifest = store.put_dir(model_dir, model_prefix(name, version))
    reports_manifest = None
    if reports_dir is not None:
        reports_manifest = store.put_dir(reports_dir, reports_prefix(name, version))
    entry = {
        "name": name,
        "version": version,
        "model_sha256": digest,
        "model_uri": store.url_for(model_prefix(name, version)),
        "reports_uri": store.url_for(reports_prefix(name, version)) if reports_dir is not None else None,
        "card_uri": store.url_for(card_key(name, version)),
        "metrics": metrics,
        "lineage": lineage,
        "charops_version": charops.__version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    card = build_card(entry=entry, inputs=card_inputs, model_manifest=model_manifest,
                      reports_manifest=reports_manifest)
    store.put_json(card_key(name, version), card)
    with tempfile.TemporaryDirectory(prefix="charops-card-") as tmp:
        readme = Path(tmp) / "README.md"
        readme.write_text(card_markdown(card), encoding="utf-8")
        store.put_file(readme, card_key(name, version, "README.md"))
    # Written last: its presence is what makes the version exist. Another registration of the
    # same name may have taken this number meanwhile; fail (a retry takes the next one) rather
    # than overwrite its entry: a conditional create, so the check and the write are one step.
    if store.put_json_if_absent(entry_key(name, version), entry) is None:
        _check_free(store, name, version)
    return entry


def get_card(store: Any, name: str, version: int | str = "latest") -> dict:
    """The model card of a registered version (see :mod:`charops.registry.card`)."""
    entry = get_entry(store, name, version)
    key = card_key(name, entry["version"])
    if not store.exists(key):  # registered before cards existed
        raise RegistryError(f"'{name}' v{entry['version']} has no model card ({store.url_for(key)})")
    return store.get_json(key)


def entry_markdown(entry: dict) -> str:
    """A short Markdown card of a registry entry (the register step's report)."""
    lines = [f"# {entry['name']} v{entry['version']}", "",
             f"- model: `{entry['model_uri']}`",
             f"- sha256: `{entry['model_sha256']}`"]
    if entry.get("reports_uri"):
        lines.append(f"- reports: `{entry['reports_uri']}`")
    for key, value in sorted(entry["lineage"].items()):
        lines.append(f"- {key}: `{value}`")
    numbers = {k: v for k, v in entry["metrics"].items() if isinstance(v, (int, float))}
    if numbers:
        lines += ["", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(numbers.items())]
    return "\n".join(lines) + "\n"


# Stages and the gate build on the functions above.
from charops.registry.stages import (  # noqa: E402
    current_actor,
    history,
    production,
    rollback,
    stage_of,
    stages,
    transition,
    version_in,
)

__all__ = ["NAME_RE", "RegistryError", "card_key", "check_name", "check_version",
           "current_actor", "entry_key", "entry_markdown", "get_card", "get_entry", "history",
           "list_names", "list_versions", "model_prefix", "production", "register",
           "reports_prefix", "rollback", "stage_of", "stages", "transition", "version_in"]
