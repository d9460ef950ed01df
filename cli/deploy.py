"""``charops deploy``: serve a registered model (locally: a KServe model server on 127.0.0.1).

    charops deploy charops-chat --local                   # the registry's production version
    charops deploy charops-chat --local --version 3       # a given version
    charops deploy charops-chat --model runs/dpo/model    # a model directory, no registry
    charops deploy charops-chat --local --port 9000 --api-key "$KEY"
    charops deploy charops-chat                           # on the cluster (KServe), production
    charops deploy charops-chat --version 5 --canary 10   # v5 gets 10% of the traffic
    charops deploy charops-chat --dry-run gpus=2          # print the manifests only
    charops rollback charops-chat --reason "v5 breaks character"

It prints the URL once the port is open; Ctrl-C or SIGTERM stops it. Talk to it with
``charops chat --endpoint http://127.0.0.1:8080 --character NAME`` or any OpenAI client
(``base_url=http://127.0.0.1:8080/openai/v1``). See docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import JsonOpt, OverridesArg, QuietOpt, ServeQuietOpt
from charops.errors import CharopsError

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Registry store: s3://BUCKET[/PREFIX], file:///PATH or a directory (default: "
    "$CHAROPS_STORE, the store config file, ./.charops/store).", show_default=False)]


# Cluster deployment (charops.deploy.cluster): the Kubernetes connection and the deploy preset.
DeployConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Cluster: deploy preset (configs/deploy/NAME.yaml: gpu, cpu) or YAML path.")]
KubeNamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Cluster: namespace (default: the kube context's, or the pod's).", show_default=False)]
KubeContextOpt = Annotated[str | None, typer.Option("--context", help="Cluster: kube context (default: the current one).", show_default=False)]
KubeconfigOpt = Annotated[str | None, typer.Option("--kubeconfig", help="Cluster: kube config file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).", show_default=False)]


def registry_model_dir(store_url: str | None, name: str, version: str | None) -> tuple[Path, dict]:
    """A local copy of the registry entry's model (``version``, else production), checked
    against the entry's sha256."""
    from charops.io import sha256_tree
    from charops.model.load import default_cache_dir
    from charops.registry import get_entry, model_prefix
    from charops.storage import open_store

    store = open_store(store_url)
    if version is None:
        from charops.registry.stages import production

        entry = production(store, name)
        if entry is None:
            raise CharopsError(f"model '{name}' has no production version in {store}; promote one "
                               "(charops promote NAME VERSION --to production) or pass --version V")
    else:
        entry = get_entry(store, name, version)
    dest = default_cache_dir().parent / "serve" / name / str(entry["version"])
    if not (dest.is_dir() and sha256_tree(dest) == entry["model_sha256"]):
        store.download_prefix(model_prefix(name, entry["version"]), dest, overwrite=True)
        if sha256_tree(dest) != entry["model_sha256"]:
            raise CharopsError(f"model '{name}' v{entry['version']}: the downloaded files do not match "
                               "the registry entry's sha256; the store copy is damaged, re-register it")
    return dest, entry


def deploy(
    name: Annotated[str, typer.Argument(help="Registered model name (also the served model id).")],
    local: Annotated[bool, typer.Option("--local", help="Serve on this machine (KServe model server).")] = False,
    version: Annotated[str | None, typer.Option("--version", help="Registry version to serve (default: the production one).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Serve this model directory instead of a registry entry (implies --local).", show_default=False)] = None,
    store: StoreOpt = None,
    bind: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes the model to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8080,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CHAROPS_API_KEY", help="Require 'Authorization: Bearer KEY' (default: $CHAROPS_API_KEY; none: open).", show_default=False)] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most replies decoded together (rows of the running batch).")] = 8,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests beyond this are answered 429.")] = 64,
    max_batch_tokens: Annotated[int, typer.Option("--max-batch-tokens", help="KV-cache budget of the running batch: rows x the longest row's prompt + max_tokens; requests that do not fit wait in the queue.")] = 16384,
    prefix_cache_mb: Annotated[int, typer.Option("--prefix-cache-mb", help="Memory for cached prompt prefixes (character profiles, earlier turns), least recently used dropped first; 0: off.")] = 256,
    max_tokens_cap: Annotated[int, typer.Option("--max-tokens-cap", help="Largest max_tokens a request may ask for.")] = 1024,
    default_max_tokens: Annotated[int | None, typer.Option("--default-max-tokens", help="max_tokens when a request gives none (default: 256, or the cap if lower).", show_default=False)] = None,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", help="Longest a request waits for others to batch with while they keep arriving (0: never).")] = 50.0,
    batch_quiet_ms: Annotated[float, typer.Option("--batch-quiet-ms", help="Stop waiting once no request has arrived for this long.")] = 5.0,
    character_prompt: Annotated[str, typer.Option("--character-prompt", help="When a request brings its own system message: merge (trained profile, then the client's text), client (the client's only) or profile (the profile only). A request's character_prompt field overrides it.")] = "merge",
    allow_untrained_characters: Annotated[bool, typer.Option("--allow-untrained-characters", help="Serve characters whose training data was all rejected (otherwise a request needs allow_untrained: true).")] = False,
    stage: Annotated[str, typer.Option("--stage", help="Cluster: serve the newest version in this registry stage (production or staging) unless --version is given.")] = "production",
    canary: Annotated[int | None, typer.Option("--canary", help="Cluster: give the --version this percentage of the traffic, the production version the rest.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Cluster: print the manifests, change nothing.")] = False,
    deploy_config: DeployConfigOpt = "gpu",
    overrides: OverridesArg = None,
    namespace: KubeNamespaceOpt = None,
    context: KubeContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    as_json: JsonOpt = False,
    quiet: ServeQuietOpt = False,
) -> None:
    """Serve a model with OpenAI-compatible chat routes, one model id per character."""
    from charops.registry import check_name
    from charops.serve.server import ServeConfig, serve

    check_name(name)
    if model is not None and version is not None:
        raise CharopsError("pass --model DIR or --version V, not both")
    if model is None and not local:
        return deploy_cluster(name, version=version, stage=stage, canary=canary, dry_run=dry_run,
                              config=deploy_config, overrides=overrides or [], store_url=store,
                              namespace=namespace, context=context, kubeconfig=kubeconfig,
                              as_json=as_json, quiet=quiet)
    if model is not None:
        model_dir, what = Path(model), f"{model}"
    else:
        model_dir, entry = registry_model_dir(store, name, version)
        what = f"{name} v{entry['version']} ({'version ' + version if version else 'production'})"
    if not quiet:
        typer.echo(f"loading {what} ...", err=True)
    serve(ServeConfig(model_dir=str(model_dir), name=name, host=bind, port=port, api_key=api_key,
                      max_batch_size=max_batch_size, max_queue=max_queue, max_batch_tokens=max_batch_tokens,
                      prefix_cache_mb=prefix_cache_mb, max_tokens_cap=max_tokens_cap,
                      default_max_tokens=default_max_tokens or min(256, max_tokens_cap), batch_wait_ms=batch_wait_ms,
                      batch_quiet_ms=batch_quiet_ms, character_prompt=character_prompt,
                      allow_untrained_characters=allow_untrained_characters))


def _connect(namespace: str | None, context: str | None, kubeconfig: str | None):
    from charops.deploy.kube import connect

    return connect(namespace, context=context, kubeconfig=kubeconfig)


def deploy_cluster(name: str, *, version: str | None, stage: str, canary: int | None, dry_run: bool,
                   config: str, overrides: list[str], store_url: str | None, namespace: str | None,
                   context: str | None, kubeconfig: str | None, as_json: bool, quiet: bool = False) -> None:
    """The cluster branch of ``charops deploy``: render, create or patch, wait, print the URL."""
    from charops.config import load_config
    from charops.deploy import cluster
    from charops.deploy.inference import DeployConfig
    from charops.storage import open_store

    if canary is not None and version is None:
        raise CharopsError("--canary needs --version V: the candidate that gets that share of the traffic")
    cfg = load_config(DeployConfig, config, overrides)
    p = cluster.plan(open_store(store_url), name, cfg, version=version, stage=stage, canary=canary)
    if dry_run:
        typer.echo(cluster.manifests_yaml(p), nl=False)
        return
    kube = _connect(namespace, context, kubeconfig)
    what = f"{name} v{(p.stable or p.entry)['version']}" + \
        (f" + canary v{p.entry['version']} at {canary}%" if canary is not None else "")
    if not quiet:
        typer.echo(f"deploying {what} to {kube.namespace}/{p.name} ({cfg.mode}) ...", err=True)
    result = cluster.deploy(kube, p, cfg, on_status=_status_printer(quiet))
    _report(result, as_json, quiet)


def _status_printer(quiet: bool):
    return (lambda s: None) if quiet else (lambda s: typer.echo(f"  {s}", err=True))


def _report(result: dict, as_json: bool, quiet: bool = False) -> None:
    from charops.cli.common import echo_json

    if as_json:
        echo_json(result)
        return
    if quiet:
        return
    typer.echo(f"{result['service']} {result['action']}: {result['url']}")
    typer.echo(f"OpenAI-compatible base URL: {result['openai_base_url']}")


def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the registry's stage history).")] = "rollback",
    store: StoreOpt = None,
    deploy_config: DeployConfigOpt = "gpu",
    overrides: OverridesArg = None,
    namespace: KubeNamespaceOpt = None,
    context: KubeContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make the previous production version production again and serve it on the cluster."""
    from charops.config import load_config
    from charops.deploy import cluster
    from charops.deploy.inference import DeployConfig
    from charops.registry import check_name
    from charops.storage import open_store

    check_name(name)
    cfg = load_config(DeployConfig, deploy_config, overrides or [])
    kube = _connect(namespace, context, kubeconfig)
    result = cluster.rollback(kube, open_store(store), name, cfg, reason=reason,
                              on_status=_status_printer(quiet))
    if not quiet:
        typer.echo(f"{name}: production is v{result['rolled_back_to']} again", err=True)
    _report(result, as_json, quiet)
