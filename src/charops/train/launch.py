"""Where a training stage runs: this process, ``torchrun`` on this pod's GPUs, or a TrainJob.

* One GPU (or CPU): the stage's ``run(config)`` in this process, as before.
* Several GPUs on one node (``gpus > 1``): ``torchrun --nproc-per-node gpus -m charops.train.<stage>``
  inside the step's pod, on the same resolved config (written to a YAML file); the summary is
  read back from the run directory.
* Several nodes (``nodes > 1``): a Kubeflow Trainer TrainJob (``charops.deploy.trainjob``) whose
  nodes each run ``python -m charops.train.launch node``: fetch the model and dataset from the
  store, ``torchrun`` with the Trainer's rendezvous (``PET_NNODES``, ``PET_NODE_RANK``,
  ``PET_MASTER_ADDR``... which torchrun reads itself), and node 0 publishes the model::

    python -m charops.train.launch node --stage sft --model s3://b/models/base \\
        --dataset s3://b/datasets/d --output s3://b/trainjobs/j/model --nproc-per-node 8 \\
        --config qwen2-7b-zero3 -- max_steps=100

Stage code stays free of launchers and Kubernetes: this module only starts processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from charops.config import to_dict
from charops.errors import CharopsError
from charops.train.stages import STAGES, stage_named


class LaunchError(CharopsError):
    """A launched training run failed, or was asked for what cannot run here."""


def resolve_gpus(gpus: int, accelerator_limit: int) -> int:
    """Processes for this pod: ``gpus`` if >= 0, else (-1 = default) the accelerator limit."""
    return max(1, accelerator_limit if gpus < 0 else gpus)


def free_port() -> int:
    """A TCP port free on loopback now (torchrun's rendezvous store binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(stage: str, nproc: int, args: list[str], *, local: bool) -> list[str]:
    """``python -m torch.distributed.run ... -m charops.train.<stage> ARGS``.

    ``local``: one node, rendezvous on loopback; otherwise the Trainer's ``PET_*`` variables
    (numNodes, node rank, master address/port) configure it.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if local:
        cmd += ["--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    return cmd + ["-m", stage_named(stage).module, *args]


def run_stage(stage: str, cfg: Any, run: Callable[[Any], dict], nproc: int,
              env: dict[str, str] | None = None) -> dict:
    """Run a resolved stage config on ``nproc`` processes of this machine; the summary."""
    if nproc <= 1:
        return run(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "launch_config.yaml"
    config_path.write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=True),
                           encoding="utf-8")
    proc = subprocess.run(torchrun_command(stage, nproc, ["--config", str(config_path)], local=True),
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise LaunchError(f"{stage} under torchrun on {nproc} processes exited with "
                          f"{proc.returncode}; the ranks' errors are in the log above")
    summary = out / "training_summary.json"
    if not summary.is_file():
        raise LaunchError(f"{stage} under torchrun finished without {summary}")
    return json.loads(summary.read_text(encoding="utf-8"))


# --- the store side of multi-node runs -------------------------------------------------------

def s3_uri(uri: str) -> str:
    """A KFP artifact URI in the store as ``s3://``: KFP names its MinIO ``minio://``."""
    if uri.startswith("minio://"):
        return "s3://" + uri.removeprefix("minio://")
    return uri


def _store_and_key(uri: str):
    from charops.storage import open_store

    parsed = urlparse(s3_uri(uri))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise LaunchError(f"'{uri}' is not an s3:// location every node can read")
    return open_store(f"s3://{parsed.netloc}"), parsed.path.strip("/")


def fetch(uri: str, dest: Path) -> Path:
    """Download a published prefix (model, dataset) to ``dest``."""
    store, key = _store_and_key(uri)
    store.download_prefix(key, dest)
    return dest


def publish(local: Path, uri: str) -> None:
    store, key = _store_and_key(uri)
    store.put_dir(local, key)


def node_rank(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("PET_NODE_RANK") or env.get("JOB_COMPLETION_INDEX") or 0)


def node_main(argv: list[str] | None = None) -> int:
    """One TrainJob node: fetch inputs, torchrun the stage across nodes, node 0 publishes."""
    ap = argparse.ArgumentParser(prog="python -m charops.train.launch node")
    ap.add_argument("--stage", choices=list(STAGES), required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--output", required=True, help="s3:// prefix node 0 publishes the model to")
    ap.add_argument("--nproc-per-node", type=int, default=1)
    ap.add_argument("--config", default="")
    ap.add_argument("--path", action="append", default=[], help="KEY=s3://... another input (DPO's ref_model)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix=f"charops-{args.stage}-node-"))
    paths = {"model": fetch(args.model, work / "in" / "model"),
             "dataset": fetch(args.dataset, work / "in" / "dataset")}
    for item in args.path:
        key, _, uri = item.partition("=")
        paths[key] = fetch(uri, work / "in" / key)
    out = work / "run"
    stage_args = (["--config", args.config] if args.config else []) + \
        [f"{k}={v}" for k, v in paths.items()] + [f"output_dir={out}", *args.overrides]
    rc = subprocess.call(torchrun_command(args.stage, args.nproc_per_node, stage_args, local=False))
    if rc != 0:
        return rc
    if node_rank() == 0:
        publish(out / "model", args.output)
        print(f"published {out / 'model'} to {args.output}", flush=True)
    return 0


def train_on_cluster(stage: str, config: str, overrides: list[str], *, model_uri: str,
                     dataset_uri: str, dest: Path, cfg, extra_uris: dict[str, str] | None = None,
                     kube=None, store=None, log: Callable[[str], None] = print) -> Path:
    """A TrainJob for ``stage`` (``cfg``: TrainJobConfig), waited on; the model in ``dest``."""
    from charops.deploy import trainjob
    from charops.deploy.kube import connect
    from charops.storage import open_store

    kube = kube or connect()
    store = store or open_store()
    name = trainjob.job_name(stage)
    key = f"trainjobs/{name}/model"
    body = trainjob.render(name, cfg, stage=stage, config=config, overrides=overrides,
                           model_uri=s3_uri(model_uri), dataset_uri=s3_uri(dataset_uri),
                           output_uri=store.url_for(key),
                           extra_uris={k: s3_uri(v) for k, v in (extra_uris or {}).items()})
    log(f"TrainJob {kube.namespace}/{name}: {cfg.nodes} nodes x {cfg.procs_per_node} processes")
    trainjob.run(kube, body, cfg, on_status=lambda s: log(f"TrainJob {name}: {s}"),
                 on_log=lambda line: log(f"[rank 0] {line}"))
    if not store.exists(f"{key}/_SUCCESS"):
        raise LaunchError(f"TrainJob {name} completed but published no model at {store.url_for(key)}")
    store.download_prefix(key, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "node":
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return node_main(argv[1:])
    except CharopsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
