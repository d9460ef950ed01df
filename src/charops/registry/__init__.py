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

Versions are increasing integers per name (1, 2, ...; a failed registration releases the number
it claimed, so only one killed outright leaves a gap), so "the latest" is obvious to people and
to ``charops deploy``. Registering content that is already registered (same model
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

Entries (``register``, ``get_entry``, ...) are in :mod:`charops.registry.entries`, stages
(``transition``, ``production``, ``rollback``, ...) in :mod:`charops.registry.stages`, both
re-exported here; the promotion gate is :mod:`charops.registry.gate`, model cards
:mod:`charops.registry.card`.
"""

from charops.registry.entries import (
    NAME_RE,
    RegistryError,
    card_key,
    check_name,
    check_version,
    entry_key,
    entry_markdown,
    get_card,
    get_entry,
    list_names,
    list_versions,
    model_prefix,
    register,
    reports_prefix,
)
from charops.registry.stages import (
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
