"""Small file helpers shared by every stage: atomic writes, hashing, JSONL.

Nothing is ever half-written: every writer goes to a temporary name in the same directory and
is renamed into place (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from charops.errors import CharopsError

# mkstemp/mkdtemp create private (0600/0700) files; published files get the usual permissions
# (what open() would give under the process umask) so other users of an image can read them.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While temporary files exist, SIGTERM (``kill``, a pod stopping) raises SystemExit like
    Ctrl-C raises KeyboardInterrupt, so the cleanup below runs instead of the process just
    vanishing. Only in the main thread, and only where nobody installed a handler of their own."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exit():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, FILE_MODE)
        try:
            if "b" not in mode:
                kwargs.setdefault("encoding", "utf-8")
                kwargs.setdefault("newline", "\n")
            with open(tmp, mode, **kwargs) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file (nothing can be written below
    it), else None."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths are the same, or one lies inside the other (symlinks resolved)."""
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def check_output(out: str | os.PathLike, *,
                 inputs: Mapping[str, str | os.PathLike | None]
                 | Iterable[tuple[str, str | os.PathLike | None]] | None = None,
                 overwrite: bool = False, option: str = "--output",
                 overwrite_hint: str | None = "pass --overwrite", directory: bool = True,
                 error: type[Exception] = CharopsError) -> Path:
    """The one guard of an output path, before anything is written: ``out`` must not overlap
    any of ``inputs`` (label -> path, or (label, path) pairs: the same path, inside it or
    holding it, symlinks resolved; paths that do not exist are skipped), and must not already hold something
    unless ``overwrite`` (a directory: exists and is not empty; a file: exists).

    ``option`` names the output as the user gave it (``--out``, ``output_dir``),
    ``overwrite_hint`` says how to allow replacing (None: it cannot be allowed), ``error`` is
    the CharopsError subclass to raise. Returns ``out`` as a Path::

        check_output(cfg.output_dir, inputs={"the input": cfg.input}, overwrite=cfg.overwrite,
                     option="output_dir", overwrite_hint="pass overwrite=true", error=DataError)
    """
    out = Path(out)
    what = "output directory" if directory else "output file"
    pairs = inputs.items() if isinstance(inputs, Mapping) else (inputs or ())
    for label, src in pairs:
        if src is not None and Path(src).exists() and overlaps(out, src):
            raise error(f"{what} '{out}' overlaps {label} '{src}' (the same path, inside it or "
                        f"holding it); writing there could destroy it: choose another {option}")
    if not directory and out.is_dir():
        raise error(f"{what} '{out}' is a directory: give a file name ({option})")
    taken = (out.exists() and (not out.is_dir() or any(out.iterdir()))) if directory else out.exists()
    if taken and not overwrite:
        fix = f"{overwrite_hint} or choose another {option}" if overwrite_hint else f"choose another {option}"
        raise error(f"{what} '{out}' {'exists and is not empty' if directory else 'exists'}; {fix}")
    return out


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, UTF-8, compact) so equal data gives equal bytes.

    orjson, because datasets are mostly long token-id lists: it encodes them ~6x faster than
    the json module, which made JSON writing a third of ``data prepare``'s own time.
    """
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, ensure_ascii=False, sort_keys=True, indent=2)
        fh.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write one canonical JSON object per line; return the number of lines."""
    n = 0
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(dumps_json(row))
            fh.write("\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(root: str | os.PathLike, exclude: Iterable[str] = ()) -> str:
    """Hash of a directory's files (relative paths and contents), independent of mtimes."""
    root = Path(root)
    skip = set(exclude)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel in skip or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        h.update(rel.encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
        h.update(b"\n")
    return h.hexdigest()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; move it to ``path`` only when complete.

    With ``overwrite`` an existing ``path`` is replaced (after the new one is complete);
    otherwise an existing non-empty ``path`` is an error raised by the caller beforehand.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():  # a file is never moved aside
        raise FileExistsError(f"{path} is a file, not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exit():
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, DIR_MODE)
        try:
            yield tmp
            if path.exists():
                if not overwrite and any(path.iterdir()):
                    raise FileExistsError(path)
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
