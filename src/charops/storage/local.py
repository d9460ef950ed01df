"""A store in a local directory: the default on one machine (``./.charops/store``).

It behaves like :class:`charops.storage.s3.S3Store`: every write is atomic (temp file, rename),
each file's size and sha256 are kept beside it under ``<root>/.meta/`` (the S3 store keeps them
in object metadata) and checked on every read, directories are published with a marker::

    from charops.storage.local import LocalStore
    store = LocalStore(".charops/store")
    store.put_dir("out/sft", "models/sft/run1")
    store.download_prefix("models/sft/run1", "/tmp/sft")
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charops.io import FILE_MODE, atomic_open, dumps_json, file_in_the_way, sha256_bytes, write_json
from charops.storage.store import (
    ObjectInfo,
    StorageError,
    Transfer,
    clean_key,
    copy_file_hashing,
    copy_stream,
    decode_json,
    download_tree,
    is_internal,
    is_temporary,
    os_errors,
    outside_store,
    publish_dir,
    resumable_download,
)


def _os_errors(method: Callable) -> Callable:
    """A read-only or full filesystem, a name too long...: a one-line error naming the store."""
    @functools.wraps(method)
    def wrapper(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
        with os_errors(self.url):
            return method(self, *args, **kwargs)
    return wrapper


class LocalStore:
    """Artifacts under one directory; keys are paths relative to it."""

    def __init__(self, root: str | os.PathLike, workers: int = 8):
        self.root = Path(root).expanduser().resolve()
        blocker = self.root if self.root.exists() and not self.root.is_dir() else file_in_the_way(self.root)
        if blocker is not None:
            raise StorageError(f"{root}: not a store: {blocker} is a file; a local store is a "
                               "directory (or an s3:// URL)")
        self.workers = workers
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def url_for(self, key: str) -> str:
        return (self.root / clean_key(key, allow_empty=True)).as_uri()

    def _path(self, key: str) -> Path:
        return self.root / clean_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / ".meta" / (clean_key(key) + ".json")

    def _info(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"{self.url_for(key)}: no such object")
        meta_path = self._meta_path(key)
        try:
            meta = json.loads(meta_path.read_bytes())
        except FileNotFoundError:  # written by hand into the store: size only, no checksum
            return ObjectInfo(clean_key(key), path.stat().st_size, "")
        except (ValueError, RecursionError):  # not JSON, not UTF-8
            meta = None
        if not (isinstance(meta, dict) and isinstance(meta.get("size"), int)
                and isinstance(meta.get("sha256"), str)):
            raise StorageError(f"{self.url_for(key)}: its checksum record {meta_path} is damaged; "
                               "delete that file (the object is then read unchecked) or upload the "
                               "object again")
        return ObjectInfo(clean_key(key), meta["size"], meta["sha256"])

    @_os_errors
    def put_file(self, local: str | os.PathLike, key: str) -> ObjectInfo:
        local, path = Path(local), self._path(key)
        if not local.is_file():
            raise StorageError(f"{local}: no such file")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self)}.tmp")
        try:
            size, sha = copy_file_hashing(local, tmp)
            write_json(self._meta_path(key), {"size": size, "sha256": sha})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return ObjectInfo(clean_key(key), size, sha)

    @_os_errors
    def get_file(self, key: str, local: str | os.PathLike, sha256: str | None = None,
                 size: int | None = None) -> Transfer:
        outside_store(Path(local), self.root)
        info = self._info(key)
        src = self._path(key)
        want_size = info.size if size is None else size
        return resumable_download(self.url_for(key), local, want_size, sha256 or info.sha256 or None,
                                  lambda offset: copy_stream(src, offset))

    @_os_errors
    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = self._meta_path(dst)
        meta.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._meta_path(src), meta)
        os.replace(self._path(src), target)

    @_os_errors
    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @_os_errors
    def list(self, prefix: str = "") -> list[str]:
        prefix = clean_key(prefix, allow_empty=True)
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not is_internal(k) and not is_temporary(k))

    @_os_errors
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    @_os_errors
    def delete_prefix(self, prefix: str) -> int:
        prefix = clean_key(prefix)
        base = self.root / prefix
        n = sum(1 for p in base.rglob("*") if p.is_file()) if base.is_dir() else 0
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(self.root / ".meta" / prefix, ignore_errors=True)
        return n

    @_os_errors
    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        data = (dumps_json(obj) + "\n").encode("utf-8")
        path = self._path(key)
        write_json(self._meta_path(key), {"size": len(data), "sha256": sha256_bytes(data)})
        with atomic_open(path, "wb") as fh:
            fh.write(data)
        return ObjectInfo(clean_key(key), len(data), sha256_bytes(data))

    @_os_errors
    def put_json_if_absent(self, key: str, obj: Any) -> ObjectInfo | None:
        """Create ``key`` holding ``obj`` only if no object is there; None if one is.

        The compare-and-swap is ``link(2)``: a complete temporary file is hard-linked to the
        key, which fails with EEXIST when the key exists, atomically on a POSIX filesystem,
        also between processes. (``O_CREAT|O_EXCL`` would be as atomic, but a reader could see
        the file before its bytes are written.) The checksum is recorded only by the winner.
        """
        data = (dumps_json(obj) + "\n").encode("utf-8")
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return None
        finally:
            os.unlink(tmp)
        write_json(self._meta_path(key), {"size": len(data), "sha256": sha256_bytes(data)})
        return ObjectInfo(clean_key(key), len(data), sha256_bytes(data))

    @_os_errors
    def get_json(self, key: str) -> Any:
        info = self._info(key)
        data = self._path(key).read_bytes()
        return decode_json(self.url_for(key), data, info.sha256)

    @_os_errors
    def put_dir(self, local_dir: str | os.PathLike, prefix: str) -> dict:
        return publish_dir(self, local_dir, prefix, workers=self.workers)

    @_os_errors
    def download_prefix(self, prefix: str, dest: str | os.PathLike, overwrite: bool = False) -> Path:
        outside_store(Path(dest), self.root)  # replacing dest must never replace the store
        return download_tree(self, prefix, dest, overwrite=overwrite, workers=self.workers)
