"""A store in any S3-compatible object store (MinIO, SeaweedFS, AWS S3) via the ``minio`` SDK.

Uploads are multipart for files larger than one part (parts sent in parallel by minio, files in
parallel by a thread pool), each verified against the ETag computed locally and tagged with its
sha256 in object metadata; downloads resume from a ``.part`` file with a Range request and are
verified against that sha256. Usually built by :func:`charops.storage.open_store`::

    from charops.storage.s3 import S3Store
    store = S3Store("127.0.0.1:8333", "models", access_key="...", secret_key="...", secure=False)
    store.put_file("model.safetensors", "runs/1/model.safetensors")
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import check_bucket_name, get_part_info

from charops.io import dumps_json, sha256_bytes
from charops.storage.store import (
    CHUNK,
    ObjectInfo,
    StorageError,
    Transfer,
    clean_key,
    decode_json,
    download_tree,
    file_digests,
    is_internal,
    publish_dir,
    resumable_download,
)

SHA_META = "charops-sha256"  # sent as x-amz-meta-charops-sha256
_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                      "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


class S3Store:
    """Artifacts in one bucket, under an optional key prefix."""

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str,
                 secure: bool = True, region: str | None = None, prefix: str = "",
                 credentials_source: str = "the given access/secret key", part_size: int = 0,
                 workers: int = 8, part_workers: int = 4, retries: int = 2,
                 connect_timeout: float = 5.0, read_timeout: float = 20.0):
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError:
            raise StorageError(f"invalid S3 bucket name '{bucket}' (3-63 characters: lowercase "
                               "letters, digits, '.', '-')") from None
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = clean_key(prefix, allow_empty=True)
        self.secure = secure
        self.credentials_source = credentials_source
        # 0 = minio's choice: 5 MiB parts, larger only past 10,000 parts (50 GB).
        self.part_size = part_size
        self.workers = workers
        self.part_workers = part_workers
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Few quick retries: an unreachable endpoint should fail in seconds, not minutes. A
        # read timeout is not retried: a server that accepted and says nothing is stuck, and
        # waiting for it again only multiplies the wait.
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        retry = urllib3.Retry(total=retries, read=0, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504])
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout)
        self._http = urllib3.PoolManager(timeout=timeout, maxsize=max(10, workers * part_workers),
                                         retries=retry)
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                            secure=secure, region=region, http_client=self._http)

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3Store({scheme}://{self.endpoint}, {self.url})"

    # -- keys and errors -----------------------------------------------------------------

    def _name(self, key: str) -> str:
        key = clean_key(key, allow_empty=True)
        return f"{self.prefix}/{key}".strip("/") if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}".rstrip("/")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn what minio/urllib3 raise into one-line errors that say what to fix."""
        scheme = "https" if self.secure else "http"
        where = f"{scheme}://{self.endpoint}"
        try:
            yield
        except S3Error as exc:
            if exc.code in _CREDENTIAL_ERRORS:
                raise StorageError(f"S3 endpoint {where} rejected the credentials from "
                                   f"{self.credentials_source} ({exc.code}) while accessing "
                                   f"{what}") from None
            if exc.code == "NoSuchBucket":
                raise StorageError(f"bucket '{self.bucket}' does not exist at {where}; create it "
                                   "or point CHAROPS_STORE at an existing one") from None
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise StorageError(f"{what}: no such object") from None
            raise StorageError(f"{what}: S3 error {exc.code}: {exc.message}") from None
        except (ServerError, InvalidResponseError) as exc:
            raise StorageError(f"{what}: S3 endpoint {where} answered with an error "
                               f"({' '.join(str(exc).split())[:200]})") from None
        except (ET.ParseError, ValueError) as exc:
            if isinstance(exc, ValueError) and not str(exc).startswith("XML element"):
                raise
            raise StorageError(f"{what}: S3 endpoint {where} answered something that is not S3 XML: it "
                               "is not an S3 API (is CHAROPS_S3_ENDPOINT the S3 port, not a web console?)") from None
        except (urllib3.exceptions.MaxRetryError, urllib3.exceptions.HTTPError) as exc:
            reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
                raise StorageError(f"S3 endpoint {where} did not answer within {self.read_timeout:g} s "
                                   f"while accessing {what} (raise CHAROPS_S3_READ_TIMEOUT or read_timeout "
                                   "in the store config if it is only slow)") from None
            if isinstance(reason, urllib3.exceptions.NewConnectionError):  # (a ConnectTimeoutError subclass)
                detail = "connection refused" if "refused" in str(reason).lower() else "cannot connect"
            elif isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
                detail = f"no connection within {self.connect_timeout:g} s (CHAROPS_S3_CONNECT_TIMEOUT)"
            elif isinstance(reason, urllib3.exceptions.SSLError):
                detail = "TLS failed (set CHAROPS_S3_SECURE=false for a plain-HTTP endpoint)"
            elif isinstance(reason, urllib3.exceptions.ProtocolError):
                detail = "the connection broke off"
            else:
                detail = reason.__class__.__name__
            raise StorageError(f"cannot reach S3 endpoint {where}: {detail} (set "
                               "CHAROPS_S3_ENDPOINT or the store config)") from None

    # -- objects -------------------------------------------------------------------------

    def _stat(self, key: str) -> ObjectInfo:
        with self._errors(self.url_for(key)):
            stat = self.client.stat_object(self.bucket, self._name(key))
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        return ObjectInfo(clean_key(key), int(stat.size), meta.get(f"x-amz-meta-{SHA_META}", ""))

    def _probe(self) -> None:
        """Ask for a bucket listing without credentials: any S3 API answers in XML (an error
        such as AccessDenied, or the listing of a public bucket); a web page or a proxy's login
        form is HTML, which the signed calls would otherwise take for an empty bucket."""
        scheme = "https" if self.secure else "http"
        where = f"{scheme}://{self.endpoint}"
        with self._errors(self.url):
            response = self._http.request("GET", f"{where}/{self.bucket}?list-type=2&max-keys=1",
                                          preload_content=False)
            try:
                head = response.read(4096)
            finally:
                response.release_conn()
        ctype = response.headers.get("Content-Type", "")
        body = head.lstrip()
        if "html" in ctype.lower() or not body.startswith(b"<") or body[:200].lower().startswith(
                (b"<!doctype html", b"<html")) or not (b"ListBucketResult" in body or b"<Error" in body):
            raise StorageError(f"S3 endpoint {where} answered a bucket listing with HTTP {response.status} "
                               f"{ctype.split(';')[0] or 'and no content type'}, not S3 XML: it is not an "
                               "S3 API (is CHAROPS_S3_ENDPOINT the S3 port, not a web console or proxy?)")

    def check(self) -> None:
        """Reach the endpoint and the bucket with these credentials (one-line error if not)."""
        self._probe()
        with self._errors(self.url):
            found = self.client.bucket_exists(self.bucket)
        if not found:
            raise StorageError(f"bucket '{self.bucket}' does not exist at {self.endpoint}; create "
                               "it or point CHAROPS_STORE at an existing one")

    def put_file(self, local: str | os.PathLike, key: str) -> ObjectInfo:
        local = Path(local)
        if not local.is_file():
            raise StorageError(f"{local}: no such file")
        size = local.stat().st_size
        part_size, _ = get_part_info(size, self.part_size)
        sha, etag = file_digests(local, part_size)
        with self._errors(self.url_for(key)):
            result = self.client.fput_object(
                self.bucket, self._name(key), str(local), metadata={SHA_META: sha},
                part_size=self.part_size, num_parallel_uploads=self.part_workers)
        got = (result.etag or "").strip('"')
        # Servers with encryption at rest return opaque ETags; the sha256 is still checked
        # on every download. An md5-style ETag must match what we sent.
        if _MD5_ETAG.match(got) and got != etag:
            self.delete(key)
            raise StorageError(f"upload of {local} to {self.url_for(key)} arrived corrupted "
                               f"(ETag {got}, expected {etag}); retry")
        return ObjectInfo(clean_key(key), size, sha)

    def get_file(self, key: str, local: str | os.PathLike, sha256: str | None = None,
                 size: int | None = None) -> Transfer:
        info = self._stat(key)
        url = self.url_for(key)

        def fetch(offset: int) -> Iterable[bytes]:
            with self._errors(url):
                # offset > 0 makes minio send "Range: bytes=<offset>-".
                response = self.client.get_object(self.bucket, self._name(key), offset=offset)
                try:
                    yield from response.stream(CHUNK)
                finally:
                    response.close()
                    response.release_conn()

        want_size = info.size if size is None else size
        return resumable_download(url, local, want_size, sha256 or info.sha256 or None, fetch)

    def move(self, src: str, dst: str) -> None:
        info = self._stat(src)
        with self._errors(self.url_for(dst)):
            # Server-side copy (composed from parts above 5 GiB); metadata is restated because
            # the composed path cannot copy it.
            self.client.copy_object(self.bucket, self._name(dst),
                                    CopySource(self.bucket, self._name(src)),
                                    metadata={SHA_META: info.sha256}, metadata_directive=REPLACE)
        copied = self._stat(dst)
        if copied.size != info.size:
            raise StorageError(f"copy to {self.url_for(dst)} has {copied.size} bytes, expected "
                               f"{info.size}; retry")
        self.delete(src)

    def exists(self, key: str) -> bool:
        url = self.url_for(key)
        with self._errors(url):
            try:
                self.client.stat_object(self.bucket, self._name(key))
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return False
                raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        prefix = clean_key(prefix, allow_empty=True)
        name = self._name(prefix)
        with self._errors(self.url_for(prefix)):
            objects = list(self.client.list_objects(self.bucket, prefix=f"{name}/" if name else None,
                                                    recursive=True))
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = (o.object_name[strip:] for o in objects if not o.is_dir)
        return sorted(k for k in keys if not is_internal(k))

    def delete(self, key: str) -> None:
        with self._errors(self.url_for(key)):
            self.client.remove_object(self.bucket, self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        name = self._name(clean_key(prefix))
        with self._errors(self.url_for(prefix)):
            names = [o.object_name for o in self.client.list_objects(self.bucket, prefix=f"{name}/",
                                                                     recursive=True)]
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
        if errors:
            raise StorageError(f"{self.url_for(prefix)}: could not delete {len(errors)} objects "
                               f"(first: {errors[0].name}: {errors[0].message})")
        return len(names)

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        data = (dumps_json(obj) + "\n").encode("utf-8")
        sha = sha256_bytes(data)
        with self._errors(self.url_for(key)):
            self.client.put_object(self.bucket, self._name(key), io.BytesIO(data), len(data),
                                   content_type="application/json", metadata={SHA_META: sha})
        return ObjectInfo(clean_key(key), len(data), sha)

    def put_json_if_absent(self, key: str, obj: Any) -> ObjectInfo | None:
        """Create ``key`` holding ``obj`` only if no object is there; None if one is.

        A conditional PUT (``If-None-Match: *``): the server checks and writes under its own
        per-object lock (MinIO: the namespace lock in ``putObject``; SeaweedFS: the filer's
        per-path lock for a routed write condition), so of concurrent creators exactly one
        wins and the others get 412 PreconditionFailed (AWS may also answer 409
        ConditionalRequestConflict while another conditional write is in flight). minio's
        ``put_object`` would send the header as user metadata, hence its PutObject primitive.
        """
        data = (dumps_json(obj) + "\n").encode("utf-8")
        sha = sha256_bytes(data)
        headers = {"Content-Type": "application/json", f"x-amz-meta-{SHA_META}": sha,
                   "If-None-Match": "*"}
        with self._errors(self.url_for(key)):
            try:
                self.client._put_object(self.bucket, self._name(key), data, headers=headers)
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return None
                raise
        return ObjectInfo(clean_key(key), len(data), sha)

    def get_json(self, key: str) -> Any:
        info = self._stat(key)
        with self._errors(self.url_for(key)):
            response = self.client.get_object(self.bucket, self._name(key))
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        return decode_json(self.url_for(key), data, info.sha256)

    # -- directories ---------------------------------------------------------------------

    def put_dir(self, local_dir: str | os.PathLike, prefix: str) -> dict:
        return publish_dir(self, local_dir, prefix, workers=self.workers)

    def download_prefix(self, prefix: str, dest: str | os.PathLike, overwrite: bool = False) -> Path:
        return download_tree(self, prefix, dest, overwrite=overwrite, workers=self.workers)
