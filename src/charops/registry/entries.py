"""Registry entries: names, version numbers, ``register`` and the readers of what it wrote.

The layout in the store and the guarantees are described in :mod:`charops.registry`::

    from charops.registry.entries import register, get_entry
    entry = register(store, "runs/dpo-model", "charops-chat", {"loss": 2.1}, {"base_model": "charops:tiny"})
    get_entry(store, "charops-chat")["version"]      # latest
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import tempfile
from pathlib import Path
from typing import Any

import charops
from charops.errors import CharopsError
from charops.io import sha256_tree
from charops.registry.card import build_card, card_markdown, card_problem, read_inputs
from charops.storage.store import publishable_files

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
                                         or re.fullmatch(r"[1-9][0-9]*", str(version))):
        raise RegistryError(f"version '{version}': use a positive integer like 3")
    if not VERSION_RE.match(str(version)):
        raise RegistryError(f"version {version} does not exist: versions are numbered from 1 "
                            "and never get that large")
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
    if not isinstance(version, bool) and re.fullmatch(r"[1-9][0-9]*", str(version)):
        version = int(version)  # any size: a number too large to be a version is simply absent
    else:
        raise RegistryError(f"model '{name}': version '{version}' is not an integer or "
                            "'latest'")
    if version not in versions:
        raise RegistryError(f"model '{name}' has no version {version} (versions: "
                            f"{', '.join(map(str, versions))})")
    return read_entry(store, name, version)


# What every entry holds, and the type readers rely on (see ``register``).
_ENTRY_FIELDS = {"name": str, "version": int, "model_sha256": str, "model_uri": str,
                 "metrics": dict, "lineage": dict, "created_at": str}


def read_entry(store: Any, name: str, version: int) -> dict:
    """The stored entry of ``name`` v``version``, checked to have the shape ``register`` writes.

    A store directory edited by hand (or by something else) can hold any JSON there; it is
    reported as such rather than failing later on a missing key.
    """
    key = entry_key(name, version)
    entry = store.get_json(key)
    if isinstance(entry, dict):
        bad = next((f for f, t in _ENTRY_FIELDS.items()
                    if not isinstance(entry.get(f), t) or isinstance(entry.get(f), bool)), None)
        if bad is None:
            return entry
        what = f"its '{bad}' is missing or not a {_ENTRY_FIELDS[bad].__name__}"
    else:
        what = f"it holds a JSON {type(entry).__name__}, not an object"
    raise RegistryError(f"{store.url_for(key)}: not a charops registry entry ({what}); it was "
                        "written by hand or damaged: restore it from a backup or delete it")


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
    for folder in (model_dir, reports_dir):
        if folder is not None:
            publishable_files(Path(folder))
    digest = sha256_tree(model_dir)
    versions = list_versions(store, name)
    for v in reversed(versions):
        existing = read_entry(store, name, v)
        if existing["model_sha256"] == digest:
            return existing
    # Claim the number before uploading (a conditional create): of two concurrent
    # registrations only one writes under models/<name>/<version>/. A registration that fails
    # releases its claim (and removes what it uploaded), so the number is not skipped; one
    # killed outright (SIGKILL, a lost node) leaves it, and the next one skips that number.
    claim = re.compile(rf"^registry/{name}/claims/([1-9][0-9]*)\.json$")
    claimed = [int(m.group(1)) for k in store.list(f"registry/{name}/") if (m := claim.match(k))]
    version = max([0, *versions, *claimed]) + 1
    if store.put_json_if_absent(claim_key(name, version),
                                {"model_sha256": digest, "at": _dt.datetime.now(_dt.UTC).isoformat()}) is None:
        _check_free(store, name, version)
        raise RegistryError(f"model '{name}' version {version} is being registered by another "
                            "run; retry the registration")
    try:
        return _publish(store, model_dir, reports_dir, name, version, digest, metrics, lineage,
                        card_inputs)
    except BaseException:
        _release(store, name, version)
        raise


def claim_key(name: str, version: int) -> str:
    return f"registry/{check_name(name)}/claims/{version}.json"


def _release(store: Any, name: str, version: int) -> None:
    """Undo a failed registration that holds the claim on ``version``: its uploads, then the
    claim. Not when the entry exists: then the version belongs to whoever wrote it."""
    with contextlib.suppress(Exception):  # the original error is the one to report
        if store.exists(entry_key(name, version)):
            return
        store.delete_prefix(f"models/{name}/{version}")
        store.delete(claim_key(name, version))


def _publish(store: Any, model_dir: Path, reports_dir: str | Path | None, name: str, version: int,
             digest: str, metrics: dict, lineage: dict, card_inputs: dict) -> dict:
    """Upload the model, reports and card of a claimed ``version``; write its entry last."""
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
    return read_card(store, key)


def read_card(store: Any, key: str) -> dict:
    """The card stored at ``key``, checked to have the shape ``register`` writes."""
    card = store.get_json(key)
    if (problem := card_problem(card)) is not None:
        raise RegistryError(f"{store.url_for(key)}: not a charops model card ({problem}); it was "
                            "written by hand or damaged: restore it from a backup or delete it")
    return card


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
