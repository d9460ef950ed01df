"""What every artifact store offers, and the directory publish/download built on it.

Two stores implement the same methods: :class:`charops.storage.local.LocalStore` (a directory,
the default on one machine) and :class:`charops.storage.s3.S3Store` (MinIO, SeaweedFS, AWS...).
Keys are ``/``-separated relative paths (``models/sft/run1/model.safetensors``).

Directories are *published*: every file is uploaded under ``.staging/<uuid>/``, checked, moved
to the final prefix, and a ``_SUCCESS`` marker holding the manifest (size and sha256 of each
file) is written last. A prefix without its marker is treated as absent, so a reader never
sees a half-published model or dataset::

    from charops.storage import open_store
    store = open_store("s3://mlpipeline/charops")      # or a local path, or None for the default
    store.put_dir("out/sft", "models/sft/run1")
    store.download_prefix("models/sft/run1", "/tmp/sft")
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import charops
from charops.errors import CharopsError
from charops.io import atomic_dir, check_output, file_in_the_way, overlaps, sha256_bytes

MARKER = "_SUCCESS"
STAGING = ".staging"
MANIFEST_FORMAT = 1
CHUNK = 1 << 20
# Bytes per '/'-separated part of a key: a filesystem name holds 255, and a local store adds up
# to ~30 around it (.meta's '.json', temporary '.NAME.<pid>.<id>.tmp'); S3 keeps the same
# limit so both stores hold the same keys.
MAX_KEY_PART = 200


class StorageError(CharopsError):
    """The store cannot do what was asked: missing object, bad checksum, bad configuration."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as written or read."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Transfer:
    """Result of :meth:`Store.get_file`: where the file is and how many bytes were fetched."""

    path: Path
    size: int
    sha256: str
    bytes_transferred: int
    resumed_from: int


class Store(Protocol):
    """The methods both stores implement (see LocalStore and S3Store for the details)."""

    url: str

    def url_for(self, key: str) -> str: ...
    def put_file(self, local: str | os.PathLike, key: str) -> ObjectInfo: ...
    def get_file(self, key: str, local: str | os.PathLike, sha256: str | None = None,
                 size: int | None = None) -> Transfer: ...
    def move(self, src: str, dst: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def put_json(self, key: str, obj: Any) -> ObjectInfo: ...
    def put_json_if_absent(self, key: str, obj: Any) -> ObjectInfo | None: ...
    def get_json(self, key: str) -> Any: ...
    def put_dir(self, local_dir: str | os.PathLike, prefix: str) -> dict: ...
    def download_prefix(self, prefix: str, dest: str | os.PathLike,
                        overwrite: bool = False) -> Path: ...


def clean_key(key: str, allow_empty: bool = False) -> str:
    """Normalise a key (strip slashes) and refuse ones that could escape the store, or that a
    filesystem cannot hold (a part longer than 255 bytes: the usual limit of a file name)."""
    stripped = str(key).strip("/")
    parts = stripped.split("/") if stripped else []
    if (not parts and not allow_empty) or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid store key '{key}': use a relative path like "
                           "'models/sft/run1' (no '..', no empty parts)")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogatepass")) > MAX_KEY_PART), None)
    if long is not None:
        raise StorageError(f"invalid store key '{key[:60]}...': its part '{long[:40]}...' is "
                           f"{len(long.encode('utf-8', 'surrogatepass'))} bytes, more than a key "
                           f"part may have ({MAX_KEY_PART}, so it fits a file name); use a shorter key")
    return stripped


# What an OSError's errno means for a store or a download, said so the user can act on it.
_OS_REASONS = {
    errno.EROFS: "the filesystem is read-only: nothing can be written there; use a writable "
                 "store or destination",
    errno.ENOSPC: "no space left on the device: free some space or use another store or "
                  "destination (nothing partial was published)",
    errno.EDQUOT: "disk quota exceeded: free some space or use another store or destination",
    errno.ENAMETOOLONG: "a file name is too long for the filesystem (255 bytes per part); use "
                        "a shorter key or path",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error: the disk or network filesystem is failing",
}


@contextlib.contextmanager
def os_errors(where: str) -> Iterator[None]:
    """Turn the OSErrors a user can act on (read-only, full disk, name too long, permission)
    into one-line StorageErrors naming ``where`` and the file; others pass unchanged."""
    try:
        yield
    except OSError as exc:
        reason = _OS_REASONS.get(exc.errno)
        if reason is None:
            raise
        at = f" (at {exc.filename})" if exc.filename and str(exc.filename) != where else ""
        raise StorageError(f"{where}: {reason}{at}") from None


def join(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def is_internal(key: str) -> bool:
    """Keys charops keeps for itself (staging uploads, local metadata) and hides from listings."""
    return key.split("/", 1)[0] in (STAGING, ".meta")


# The names a local store gives its files while they are written (``.NAME.XXXX.tmp``) and a
# replaced directory while it is swapped (``.NAME.old``): hidden from listings, so no key may
# take such a name. Other names starting with '.' are ordinary keys.
_TEMPORARY = re.compile(r"^\..+\.(tmp|old)$")


def is_temporary(key: str) -> bool:
    """A local store's in-flight file (see ``_TEMPORARY``), which listings hide."""
    return any(_TEMPORARY.match(part) for part in key.split("/"))


def check_put(store: Store, key: str, directory: bool, force: bool = False) -> str:
    """Refuse an upload that would corrupt the store or silently replace published content.

    Always refused: a key under an existing object (``m/config.json/x``), a file onto a key
    that is a folder, a directory onto a key that is a file. Refused unless ``force``: keys
    under the store's own ``.meta/`` and ``.staging/``, a ``_SUCCESS`` marker, a file inside a
    published prefix, and a directory onto a prefix that holds anything (publishing replaces
    everything under it). Returns the cleaned key.
    """
    key = clean_key(key)
    url = store.url_for(key)
    parts = key.split("/")
    if is_internal(key) and not force:
        raise StorageError(f"{url}: keys under {STAGING}/ and .meta/ belong to the store itself; "
                           "choose another key (or --force)")
    if is_temporary(key):
        raise StorageError(f"{url}: names like '.NAME.tmp' and '.NAME.old' are the store's own "
                           "temporary files, hidden from listings; choose another key")
    ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
    for a in ancestors:
        if store.exists(a):
            raise StorageError(f"{store.url_for(a)} is a file in the store, so nothing can go under it; "
                               "choose another key")
    if not force:
        for a in ancestors:
            if store.exists(join(a, MARKER)):
                raise StorageError(f"{url} is inside the published prefix {a}; changing it in place "
                                   "changes it under its readers: publish a new version, or pass --force")
    if directory:
        if store.exists(key):
            raise StorageError(f"{url} is a file in the store; a directory needs a key that is a folder")
        held = store.list(key)
        if held and not force:
            raise StorageError(f"{url} already holds {len(held)} object(s); publishing a directory there "
                               "replaces all of them: choose a new key, or pass --force")
    else:
        if store.list(key):
            raise StorageError(f"{url} is a folder in the store; name the file's own key ({key}/NAME)")
        if parts[-1] == MARKER and not force:
            raise StorageError(f"{url}: {MARKER} is the publish marker charops writes itself; upload "
                               "a directory to publish it (or --force)")
    return key


def get_destination(key: str, dest: str | os.PathLike, prefix: bool, force: bool = False,
                    store_root: str | os.PathLike | None = None) -> Path:
    """Where ``store get`` writes, refusing what would destroy local files.

    An object into an existing directory keeps its name there (as ``cp`` does); an existing
    file is replaced only with ``force``. A prefix never replaces a file, the current
    directory or one above it; a non-empty directory only with ``force``. Nothing is ever
    written into, over or around ``store_root`` (a local store's directory), ``force`` or not:
    a download replacing its own store would wipe every version it holds. (An object into a
    directory that holds the store, e.g. ``.`` beside the default ``./.charops/store``, is
    fine: only the file it writes must lie outside.)
    """
    dest = Path(dest)
    if prefix:
        if store_root is not None:
            outside_store(dest, store_root)
        if dest.exists() and not dest.is_dir():
            raise StorageError(f"{dest} is a file; a published prefix downloads into a directory")
        here = Path.cwd().resolve()
        resolved = dest.resolve()
        if resolved == here or resolved in here.parents:
            raise StorageError(f"{dest} is the current directory or holds it, which a download never "
                               f"replaces; name a new folder, e.g. ./{key.rstrip('/').rsplit('/', 1)[-1]}")
        check_output(dest, overwrite=force, option="destination", overwrite_hint="pass --force",
                     error=StorageError)
        return resolved
    if dest.is_dir():
        dest = dest / clean_key(key).rsplit("/", 1)[-1]
        if dest.is_dir():
            raise StorageError(f"{dest} is a directory; name the file to write")
    if store_root is not None:
        outside_store(dest, store_root)
    if dest.exists() and not force:
        raise StorageError(f"{dest} already exists (pass --force to replace it)")
    if (blocker := file_in_the_way(dest)) is not None:
        raise StorageError(f"{blocker} is a file, not a folder; choose another destination")
    return dest


def outside_store(dest: Path, store_root: str | os.PathLike) -> None:
    if overlaps(dest, store_root):  # symlinks resolved
        raise StorageError(f"{dest} overlaps the store {store_root} (it is the store, lies inside "
                           "it or holds it); a download never writes into its own store, even "
                           "with --force: choose a destination outside it")


def file_digests(path: str | os.PathLike, part_size: int = 0) -> tuple[str, str]:
    """sha256 of a file and the S3 ETag an upload in ``part_size`` parts would get (0: one part).

    S3's ETag of a multipart object is md5(md5(part1) + md5(part2) + ...) + "-<parts>", of a
    single-part one the md5 of the bytes; computing it locally verifies the upload end to end.
    """
    sha = hashlib.sha256()
    part_md5s: list[bytes] = []
    with open(path, "rb") as fh:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            remaining = part_size or (1 << 62)
            got = 0
            while remaining and (block := fh.read(min(CHUNK, remaining))):
                sha.update(block)
                part.update(block)
                remaining -= len(block)
                got += len(block)
            if got == 0 and part_md5s:
                break
            part_md5s.append(part.digest())
            if not part_size or got < part_size:
                break
    if len(part_md5s) == 1:
        return sha.hexdigest(), part_md5s[0].hex()
    combined = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
    return sha.hexdigest(), f"{combined}-{len(part_md5s)}"


def finish_download(part: Path, final: Path, url: str, want_size: int, want_sha: str | None,
                    ) -> str:
    """Check a completed ``.part`` file and rename it into place; a bad one is deleted."""
    got_size = part.stat().st_size
    if got_size != want_size:
        part.unlink()
        raise StorageError(f"{url}: downloaded {got_size} bytes, expected {want_size}; "
                           "the object changed or the transfer was cut, retry")
    sha = hashlib.sha256()
    with open(part, "rb") as fh:
        while block := fh.read(CHUNK):
            sha.update(block)
    got_sha = sha.hexdigest()
    if want_sha and got_sha != want_sha:
        part.unlink()
        raise StorageError(f"{url}: checksum mismatch (sha256 {got_sha[:12]}..., expected "
                           f"{want_sha[:12]}...): the stored object is corrupt; upload it again")
    os.replace(part, final)
    return got_sha


def resumable_download(url: str, local: str | os.PathLike, size: int, sha256: str | None,
                       fetch: Callable[[int], Iterable[bytes]]) -> Transfer:
    """Download into ``local.part``, continuing from its size, then verify and rename.

    ``fetch(offset)`` yields the object's bytes from ``offset`` on (an S3 Range request, a
    seek in a local file). A resumed file that fails its checksum (the object was replaced
    since the first attempt) is fetched once more from the start.
    """
    final = Path(local)
    with os_errors(str(final)):
        return _resumable_download(url, final, size, sha256, fetch)


def _resumable_download(url: str, final: Path, size: int, sha256: str | None,
                        fetch: Callable[[int], Iterable[bytes]]) -> Transfer:
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    transferred = 0
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:
            part.unlink()
            offset = 0
        resumed_from = offset
        if offset < size:
            with open(part, "ab") as fh:
                for block in fetch(offset):
                    fh.write(block)
                    transferred += len(block)
        else:
            part.touch()
        try:
            got = finish_download(part, final, url, size, sha256)
        except StorageError:
            if attempt == 0 and resumed_from > 0:
                continue  # the stale .part was deleted: start over
            raise
        return Transfer(final, size, got, transferred, resumed_from)
    raise AssertionError("unreachable")


def decode_json(url: str, data: bytes, sha256: str | None) -> Any:
    """A stored JSON object's bytes, checked against their recorded sha256, parsed."""
    if sha256 and sha256_bytes(data) != sha256:
        raise StorageError(f"{url}: checksum mismatch: the stored object is corrupt")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{url}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:  # binary content: json.loads sniffs the encoding and fails
        raise StorageError(f"{url}: not valid JSON (binary content, not UTF-8 text)") from None
    except RecursionError:
        raise StorageError(f"{url}: not valid JSON (nested too deeply)") from None


def publishable_files(local_dir: Path) -> list[str]:
    """The files of a directory to publish (relative paths); one holding ``_SUCCESS`` is refused."""
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory")
    files = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    if MARKER in files:
        raise StorageError(f"{local_dir}: contains a file named {MARKER}, which charops reserves "
                           "for its publish marker; rename or remove it")
    return files


def publish_dir(store: Store, local_dir: str | os.PathLike, prefix: str, workers: int = 8) -> dict:
    """Upload a directory to ``prefix`` so that it appears complete or not at all.

    Returns the manifest written to ``<prefix>/_SUCCESS``.
    """
    local_dir = Path(local_dir)
    prefix = clean_key(prefix)
    files = publishable_files(local_dir)
    stage = f"{STAGING}/{uuid.uuid4().hex}"
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            infos = list(pool.map(lambda rel: store.put_file(local_dir / rel, f"{stage}/{rel}"), files))
        manifest = {
            "format": MANIFEST_FORMAT,
            "charops_version": charops.__version__,
            "files": {rel: {"size": i.size, "sha256": i.sha256} for rel, i in zip(files, infos, strict=True)},
        }
        # Unpublish the previous content first: from here until the new marker is written,
        # readers see the prefix as absent rather than a mix of old and new files.
        store.delete(join(prefix, MARKER))
        stale = set(store.list(prefix)) - {join(prefix, rel) for rel in files}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda rel: store.move(f"{stage}/{rel}", join(prefix, rel)), files))
            list(pool.map(store.delete, sorted(stale)))
        store.put_json(join(prefix, MARKER), manifest)
    finally:
        store.delete_prefix(stage)
    return manifest


def read_manifest(store: Store, prefix: str) -> dict:
    """The manifest of a published prefix; an unpublished one is an error saying so."""
    prefix = clean_key(prefix)
    marker = join(prefix, MARKER)
    if not store.exists(marker):
        raise StorageError(f"{store.url_for(prefix)}: not found (no {MARKER} marker: never "
                           "published, or an upload is still running or failed)")
    manifest = store.get_json(marker)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not all(
            isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
            for m in manifest["files"].values()):
        raise StorageError(f"{store.url_for(marker)}: not a charops manifest (a 'files' object of "
                           "{size, sha256} records); publish the directory again")
    return manifest


def download_tree(store: Store, prefix: str, dest: str | os.PathLike, overwrite: bool = False,
                  workers: int = 8) -> Path:
    """Download a published prefix into ``dest``, which appears only when complete and verified."""
    dest = Path(dest)
    manifest = read_manifest(store, prefix)
    check_output(dest, overwrite=overwrite, option="destination",
                 overwrite_hint="pass overwrite=True (--force)", error=StorageError)
    with os_errors(str(dest)), atomic_dir(dest, overwrite=True) as tmp:
        def fetch(item: tuple[str, dict]) -> None:
            rel, meta = item
            store.get_file(join(clean_key(prefix), rel), tmp / rel, sha256=meta["sha256"], size=meta["size"])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fetch, sorted(manifest["files"].items())))
    return dest


def copy_stream(src: Path, offset: int) -> Iterable[bytes]:
    with open(src, "rb") as fh:
        fh.seek(offset)
        while block := fh.read(CHUNK):
            yield block


def copy_file_hashing(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (plain copy) returning size and sha256 of what was read."""
    sha = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(CHUNK):
            sha.update(block)
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)
    return size, sha.hexdigest()
