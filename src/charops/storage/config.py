"""Which store to use: ``open_store(url)`` resolves the configuration, first match wins.

1. ``url`` (``s3://bucket/prefix``, ``file:///path`` or a plain path), else ``$CHAROPS_STORE``,
   else ``url:`` in the store config file (``$CHAROPS_STORE_CONFIG``, default
   ``~/.config/charops/store.yaml``).
2. In a cluster (``$KUBERNETES_SERVICE_HOST`` set) with none of those: the store KFP already
   uses, ``s3://mlpipeline/charops`` at ``minio-service.kubeflow:9000``.
3. Otherwise a local directory, ``./.charops/store``.

For ``s3://`` stores: endpoint from ``$CHAROPS_S3_ENDPOINT`` (``host:port`` or
``http(s)://host:port``), the config file's ``endpoint``, or the in-cluster default;
``$CHAROPS_S3_SECURE`` (true/false) overrides the scheme; region from ``$CHAROPS_S3_REGION`` /
``$AWS_REGION``; timeouts in seconds from ``$CHAROPS_S3_CONNECT_TIMEOUT`` (default 5) and
``$CHAROPS_S3_READ_TIMEOUT`` (default 20), or ``connect_timeout``/``read_timeout`` in the file. Credentials, never in code: ``$AWS_ACCESS_KEY_ID`` + ``$AWS_SECRET_ACCESS_KEY``
(how KFP components get the ``mlpipeline-minio-artifact`` secret), else files ``accesskey`` and
``secretkey`` in ``$CHAROPS_S3_SECRET_DIR`` (the secret mounted as a volume), else
``access_key``/``secret_key`` in the config file::

    CHAROPS_STORE=s3://models/charops CHAROPS_S3_ENDPOINT=http://127.0.0.1:8333 \\
      AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... charops store ls
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import yaml

from charops.storage.local import LocalStore
from charops.storage.s3 import S3Store
from charops.storage.store import StorageError

# The artifact store and secret a Kubeflow Pipelines install already has.
KFP_ENDPOINT = "minio-service.kubeflow:9000"
KFP_BUCKET = "mlpipeline"
KFP_PREFIX = "charops"
KFP_SECRET_NAME = "mlpipeline-minio-artifact"
# Secret key -> environment variable, for kfp.kubernetes.use_secret_as_env in components.
KFP_SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
LOCAL_DEFAULT = ".charops/store"
_CONFIG_KEYS = {"url", "endpoint", "access_key", "secret_key", "secure", "region", "secret_dir",
                "part_size", "workers", "connect_timeout", "read_timeout"}
# Seconds: a stuck or wrong endpoint fails fast; raise them for a slow link.
DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT = 5.0, 20.0
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def config_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("CHAROPS_STORE_CONFIG") or Path.home() / ".config/charops/store.yaml").expanduser()


def read_store_config(env: Mapping[str, str]) -> dict:
    """The store config file as a dict ({} when there is none); unknown keys are errors."""
    path = config_path(env)
    if not path.is_file():
        if env.get("CHAROPS_STORE_CONFIG"):
            raise StorageError(f"{path}: no such store config (from CHAROPS_STORE_CONFIG)")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise StorageError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise StorageError(f"{path}: expected a mapping with keys {', '.join(sorted(_CONFIG_KEYS))}")
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise StorageError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(_CONFIG_KEYS))})")
    data["_path"] = str(path)
    return data


def _bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise StorageError(f"{where}: expected true or false, got '{value}'")


def _seconds(env: Mapping[str, str], cfg: dict, name: str, default: float) -> float:
    """A timeout from $CHAROPS_S3_<NAME>, else the config file's ``name``, else ``default``."""
    var = f"CHAROPS_S3_{name.upper()}"
    if env.get(var):
        raw, where = env[var], var
    elif name in cfg:
        raw, where = cfg[name], f"{cfg['_path']}: {name}"
    else:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise StorageError(f"{where}: expected a number of seconds above 0, got '{raw}'")
    return value


def _credentials(env: Mapping[str, str], cfg: dict, in_cluster: bool) -> tuple[str, str, str]:
    """(access key, secret key, where they came from) — the source is named in errors."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], \
            "env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    secret_dir = env.get("CHAROPS_S3_SECRET_DIR") or cfg.get("secret_dir")
    if secret_dir:
        d = Path(secret_dir)
        try:
            access = (d / "accesskey").read_text(encoding="utf-8").strip()
            secret = (d / "secretkey").read_text(encoding="utf-8").strip()
        except FileNotFoundError as exc:
            raise StorageError(f"S3 secret directory {d} (CHAROPS_S3_SECRET_DIR) lacks "
                               f"'{Path(exc.filename).name}': mount the secret with keys "
                               "accesskey and secretkey") from None
        return access, secret, f"secret files in {d}"
    if cfg.get("access_key") and cfg.get("secret_key"):
        return str(cfg["access_key"]), str(cfg["secret_key"]), f"store config {cfg['_path']}"
    hint = (f"; in a cluster, mount secret '{KFP_SECRET_NAME}' keys accesskey/secretkey as "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") if in_cluster else ""
    raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                       "CHAROPS_S3_SECRET_DIR, or access_key/secret_key in "
                       f"{config_path(env)}{hint}")


def open_s3(url: str, env: Mapping[str, str], cfg: dict, in_cluster: bool, check: bool) -> S3Store:
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise StorageError(f"store URL '{url}': expected s3://BUCKET[/PREFIX]")
    if env.get("CHAROPS_S3_ENDPOINT"):
        raw_endpoint, source = env["CHAROPS_S3_ENDPOINT"], "CHAROPS_S3_ENDPOINT"
    elif cfg.get("endpoint"):
        raw_endpoint, source = str(cfg["endpoint"]), f"endpoint in {cfg['_path']}"
    elif in_cluster:
        raw_endpoint, source = f"http://{KFP_ENDPOINT}", "in-cluster default"
    else:
        raise StorageError(f"store {url} needs an S3 endpoint: set CHAROPS_S3_ENDPOINT "
                           "(e.g. http://127.0.0.1:9000) or 'endpoint' in the store config")
    endpoint_url = urlparse(raw_endpoint if "://" in raw_endpoint else f"//{raw_endpoint}")
    if endpoint_url.scheme not in ("", "http", "https") or not endpoint_url.netloc or \
            endpoint_url.path.strip("/"):
        raise StorageError(f"S3 endpoint '{raw_endpoint}' ({source}): expected host:port or "
                           "http(s)://host:port with no path")
    secure = endpoint_url.scheme != "http"
    if env.get("CHAROPS_S3_SECURE"):
        secure = _bool(env["CHAROPS_S3_SECURE"], "CHAROPS_S3_SECURE")
    elif "secure" in cfg:
        secure = _bool(cfg["secure"], f"{cfg['_path']}: secure")
    access, secret, cred_source = _credentials(env, cfg, in_cluster)
    region = env.get("CHAROPS_S3_REGION") or env.get("AWS_REGION") or cfg.get("region")
    try:
        store = S3Store(endpoint_url.netloc, bucket, access, secret, secure=secure, region=region,
                        prefix=prefix, credentials_source=cred_source,
                        part_size=int(cfg.get("part_size", 0)), workers=int(cfg.get("workers", 8)),
                        connect_timeout=_seconds(env, cfg, "connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                        read_timeout=_seconds(env, cfg, "read_timeout", DEFAULT_READ_TIMEOUT))
    except ValueError as exc:  # minio's own checks: bucket name, endpoint form
        raise StorageError(f"store {url} at {raw_endpoint}: {exc}") from None
    if check:
        store.check()
    return store


def open_store(url: str | None = None, env: Mapping[str, str] | None = None,
               check: bool = True) -> LocalStore | S3Store:
    """The configured store (see the module docstring for the order); ``check`` reaches it now.

    ``env`` defaults to ``os.environ`` (tests pass their own mapping).
    """
    env = os.environ if env is None else env
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
    cfg = read_store_config(env)
    url = url or env.get("CHAROPS_STORE") or cfg.get("url")
    if not url:
        if in_cluster:
            url = f"s3://{KFP_BUCKET}/{KFP_PREFIX}"
        else:
            return LocalStore(LOCAL_DEFAULT)
    url = str(url)
    if url.startswith("s3://"):
        return open_s3(url, env, cfg, in_cluster, check)
    if url.startswith("file://"):
        return LocalStore(urlparse(url).path)
    if "://" in url:
        raise StorageError(f"store URL '{url}': use s3://BUCKET[/PREFIX], file:///PATH or a "
                           "local directory")
    return LocalStore(url)
