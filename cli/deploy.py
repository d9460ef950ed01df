"""``charops deploy``: serve a registered model on the cluster (a KServe InferenceService).

    charops deploy charops-chat                           # production, on the kube context's cluster
    charops deploy charops-chat --version 5 --canary 10   # v5 gets 10% of the traffic
    charops deploy charops-chat --dry-run gpus=2          # print the manifests only
    charops rollback charops-chat --reason "v5 breaks character"

On this machine the server is ``charops serve`` (cli/serve.py); ``charops deploy NAME --local
[options]`` and ``charops deploy NAME --model DIR [options]`` hand their options to it, so
they work as before. See docs/cluster.md and docs/serving.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import JsonOpt, OverridesArg, QuietOpt, ServeQuietOpt
from charops.cli.serve import StoreOpt
from charops.errors import CharopsError

# Cluster deployment (charops.deploy.cluster): the Kubernetes connection and the deploy preset.
DeployConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Deploy preset (configs/deploy/NAME.yaml: gpu, cpu) or YAML path.")]
KubeNamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: the kube context's, or the pod's).", show_default=False)]
KubeContextOpt = Annotated[str | None, typer.Option("--context", help="Kube context (default: the current one).", show_default=False)]
KubeconfigOpt = Annotated[str | None, typer.Option("--kubeconfig", help="Kube config file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).", show_default=False)]
# deploy --local hands the options it does not know (--port, --api-key, ...) to charops serve:
# cli/main.py registers deploy with these settings (click then passes them on as arguments).
DEPLOY_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def _serve_locally(target: str, name: str, version: str | None, store: str | None, as_json: bool,
                   quiet: bool, passed: list[str]) -> None:
    """``deploy --local`` / ``--model``: run ``charops serve`` with the same options."""
    from charops.cli.serve import serve

    args = [target, *(["--name", name] if target != name else []), *(["--version", version] if version else []),
            *(["--store", store] if store else []), *(["--json"] if as_json else []), *(["-q"] if quiet else []),
            *passed]
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(serve)
    typer.main.get_command(app).main(args, prog_name="charops deploy NAME --local", standalone_mode=False)


def deploy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name (also the served model id).")],
    version: Annotated[str | None, typer.Option("--version", help="Registry version to serve (default: the newest in --stage).", show_default=False)] = None,
    stage: Annotated[str, typer.Option("--stage", help="Serve the newest version in this registry stage (production or staging) unless --version is given.")] = "production",
    canary: Annotated[int | None, typer.Option("--canary", help="Give the --version this percentage of the traffic, the production version the rest.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the manifests, change nothing.")] = False,
    store: StoreOpt = None,
    deploy_config: DeployConfigOpt = "gpu",
    overrides: OverridesArg = None,
    namespace: KubeNamespaceOpt = None,
    context: KubeContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    local: Annotated[bool, typer.Option("--local", help="Serve on this machine instead: the same as 'charops serve NAME', whose options (--port, --api-key, ...) follow.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Serve this model directory on this machine as NAME: the same as 'charops serve DIR --name NAME'.", show_default=False)] = None,
    as_json: JsonOpt = False,
    quiet: ServeQuietOpt = False,
) -> None:
    """Deploy a registered model to the cluster (KServe), or with --local serve it here."""
    from charops.registry import check_name

    check_name(name)
    if model is not None and version is not None:
        raise CharopsError("pass --model DIR or --version V, not both")
    # Options deploy does not know arrive as arguments: in overrides (key=value) and ctx.args.
    passed = [*(overrides or []), *ctx.args]
    if local or model is not None:
        cluster_only = [flag for flag, given in (("--stage", stage != "production"), ("--canary", canary is not None),
                        ("--dry-run", dry_run), ("--config", deploy_config != "gpu"), ("--namespace", namespace),
                        ("--context", context), ("--kubeconfig", kubeconfig)) if given]
        if cluster_only:
            raise CharopsError(f"{', '.join(cluster_only)}: cluster options, but --local/--model serve on this machine")
        # --model is always a directory, even one named like a registered model.
        target = name if model is None else model if "/" in model else f"./{model}"
        return _serve_locally(target, name, version, store, as_json, quiet, passed)
    unknown = [a for a in passed if a.startswith("-")]
    if unknown:
        raise CharopsError(f"unknown option(s) for a cluster deploy: {' '.join(unknown)} (the options of a "
                           "local server need --local, or charops serve)")
    deploy_cluster(name, version=version, stage=stage, canary=canary, dry_run=dry_run, config=deploy_config,
                   overrides=overrides or [], store_url=store, namespace=namespace, context=context,
                   kubeconfig=kubeconfig, as_json=as_json, quiet=quiet)


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
