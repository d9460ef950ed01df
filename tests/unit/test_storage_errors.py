"""Store failures a user can act on are one line, exit 2, never a traceback (issue 19): a key
too long for a filesystem, a read-only store, a full disk; keys that start with '.'; keys with
terminal escapes printed by ``store ls`` (issue 19 item 12).

    .venv/bin/python -m pytest tests/unit/test_storage_errors.py -x -q
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from test_cli_models import _publish, _summary
from typer.testing import CliRunner

from charops.cli.common import echo_json, printable
from charops.cli.main import app
from charops.storage import StorageError
from charops.storage.local import LocalStore

runner = CliRunner()


@pytest.fixture
def store(tmp_path, monkeypatch) -> LocalStore:
    monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    return LocalStore(tmp_path / "store")


def _file(tmp_path: Path, text: str = "x") -> Path:
    f = tmp_path / "f.txt"
    f.write_text(text)
    return f


# --- a 300-character key (ENAMETOOLONG) ---------------------------------------------------------

def test_a_key_too_long_for_a_filesystem_is_one_line_on_put_get_and_ls(tmp_path, store):
    long = "k" * 300
    f = _file(tmp_path)
    for args in (["put", str(f), long], ["put", str(f), f"models/{long}/x"],
                 ["get", long, str(tmp_path / "out")], ["ls", long], ["ls", f"a/{long}"]):
        assert_one_line_error(runner.invoke(app, ["store", *args]), "more than a key part may have")
    # 200 bytes is the limit (a file name holds 255; the local store adds up to ~30 around it)
    ok = "k" * 200
    for key in (ok, f"d/{ok}/{ok}"):
        res = runner.invoke(app, ["store", "put", str(f), key])
        assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["store", "ls"]).stdout.split() == [f"d/{ok}/{ok}", ok]
    assert runner.invoke(app, ["store", "get", ok, str(tmp_path / "back")]).exit_code == 0
    # the limit is in bytes: 67 three-byte characters are 201 bytes
    assert_one_line_error(runner.invoke(app, ["store", "put", str(f), "字" * 67]), "201 bytes")


# --- a read-only store and a full disk (EROFS, ENOSPC) -------------------------------------------

@pytest.fixture
def failing_writes(monkeypatch):
    """``fail(root, code)``: every write under ``root`` raises OSError(code), as a read-only
    mount or a full disk would. A stand-in: a real read-only bind mount needs privileges these
    tests do not have, and filling a disk is not something a test may do. The os-level calls
    every writer goes through are patched: os.open (mkstemp, Path.touch), builtins/io.open in a
    writing mode, os.mkdir, os.replace, os.rename, os.link."""
    def fail(root: Path, code: int) -> None:
        root = os.path.abspath(root)

        def under(path) -> bool:
            try:
                return os.path.abspath(os.fspath(path)).startswith(root)
            except TypeError:  # a file descriptor
                return False

        def guard(real, *, paths=(0,), writing=lambda args, kwargs: True):
            def patched(*args, **kwargs):
                if writing(args, kwargs) and any(under(args[i]) for i in paths if i < len(args)):
                    raise OSError(code, os.strerror(code), os.fspath(args[paths[-1]]))
                return real(*args, **kwargs)
            return patched

        def write_mode(args, kwargs) -> bool:
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
            return any(c in mode for c in "wax+")

        def os_open_writing(args, kwargs) -> bool:
            flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
            return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

        monkeypatch.setattr(os, "open", guard(os.open, writing=os_open_writing))
        monkeypatch.setattr(builtins, "open", guard(builtins.open, writing=write_mode))
        monkeypatch.setattr(io, "open", guard(io.open, writing=write_mode))
        monkeypatch.setattr(os, "mkdir", guard(os.mkdir))
        for name in ("replace", "rename", "link"):
            monkeypatch.setattr(os, name, guard(getattr(os, name), paths=(0, 1)))
    return fail


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left")])
def test_put_to_a_read_only_or_full_store_is_one_line_and_publishes_nothing(tmp_path, store, failing_writes,
                                                                              code, words):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}\n")
    store.put_json("seed.json", {"a": 1})  # the store exists before it turns read-only/full
    failing_writes(store.root, code)
    for args in (["put", str(d), "models/m"], ["put", str(d / "config.json"), "one.json"]):
        assert_one_line_error(runner.invoke(app, ["store", *args]), store.url, words)
    assert store.list("") == ["seed.json"]


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left")])
def test_get_onto_a_read_only_or_full_destination_is_one_line(tmp_path, store, failing_writes, code, words):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}\n")
    store.put_dir(d, "models/m")
    dest = tmp_path / "dest"
    dest.mkdir()
    failing_writes(dest, code)
    for args in (["get", "models/m", str(dest / "m")], ["get", "models/m/config.json", str(dest / "c.json")]):
        assert_one_line_error(runner.invoke(app, ["store", *args]), str(dest), words)
    assert list(dest.iterdir()) == []


def test_get_from_a_read_only_store_works(tmp_path, store, failing_writes):
    """Reading needs no writes: a read-only store still serves downloads."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}\n')
    store.put_dir(d, "models/m")
    failing_writes(store.root, errno.EROFS)
    res = runner.invoke(app, ["store", "get", "models/m", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == {"a": 1}


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left")])
def test_promote_on_a_read_only_or_full_store_is_one_line(tmp_path, store, failing_writes, code, words):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    failing_writes(store.root, code)
    res = runner.invoke(app, ["promote", "chat", "1", "--to", "staging"])
    assert_one_line_error(res, store.url, words)
    assert store.list("registry/chat/stages/") == []


def test_register_on_a_full_store_is_a_storage_error_and_keeps_the_number_free(tmp_path, store, failing_writes,
                                                                             monkeypatch):
    from charops.registry import list_versions

    _publish(store, tmp_path, 1, _summary(20, 0.01))
    real_put_dir = store.put_dir

    def put_dir_full(local, prefix):  # the disk fills during the upload of the model
        failing_writes(store.root / "models", errno.ENOSPC)
        return real_put_dir(local, prefix)

    monkeypatch.setattr(store, "put_dir", put_dir_full)
    with pytest.raises(StorageError, match="no space left"):
        _publish(store, tmp_path, 2, _summary(20, 0.01))
    assert list_versions(store, "chat") == [1]
    assert not store.exists("registry/chat/claims/2.json")


# --- keys that start with '.' --------------------------------------------------------------------

def test_a_key_starting_with_a_dot_is_listed(tmp_path, store):
    """It used to upload and then never show in ``store ls`` (the S3 store listed it)."""
    f = _file(tmp_path)
    for key in (".env", "models/.hidden/config.json"):
        assert runner.invoke(app, ["store", "put", str(f), key]).exit_code == 0
    assert runner.invoke(app, ["store", "ls"]).stdout.split() == [".env", "models/.hidden/config.json"]


def test_a_key_named_like_the_stores_temporary_files_is_refused(tmp_path, store):
    f = _file(tmp_path)
    for key in (".config.json.tmp", "models/.m.old/x", ".a.123.tmp"):
        assert_one_line_error(runner.invoke(app, ["store", "put", str(f), key]), "temporary files")
    assert store.list("") == []


# --- terminal escapes (item 12) ----------------------------------------------------------------

EVIL = "a\x1b[31mred\x1b]0;pwned\x07\x9b2J\u202eb"


def test_printable_escapes_every_terminal_control():
    assert printable(EVIL) == "a\\x1b[31mred\\x1b]0;pwned\\x07\\x9b2J\\u202eb"
    assert printable("line 1\nline 2\ttab", keep="\n") == "line 1\nline 2\\x09tab"
    assert printable("林小满 ok: plain text, no change") == "林小满 ok: plain text, no change"


def test_store_ls_prints_keys_with_escapes_made_visible(tmp_path, store):
    f = _file(tmp_path)
    store.put_file(f, f"models/{EVIL}")
    out = runner.invoke(app, ["store", "ls"]).stdout
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert out.strip() == f"models/{printable(EVIL)}"
    # --json: JSON escapes C0 itself; C1 and bidi controls are escaped too, and parse back
    raw = runner.invoke(app, ["store", "ls", "--json"]).stdout
    assert "\x1b" not in raw and "\x9b" not in raw and "\u202e" not in raw
    assert json.loads(raw) == [f"models/{EVIL}"]


def test_errors_and_registry_output_escape_controls(tmp_path, store, capsys):
    line = assert_one_line_error(runner.invoke(app, ["registry", "show", EVIL]), "\\x1b[31m")
    assert "\x1b" not in line and "\x07" not in line
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    res = runner.invoke(app, ["promote", "chat", "1", "--to", "staging", "--force", "--reason",
                              "r", "--actor", EVIL])
    assert res.exit_code == 0 and "\x1b" not in res.stdout
    history = runner.invoke(app, ["registry", "history", "chat"]).stdout
    assert "\x1b" not in history and printable(EVIL) in history
    echo_json({"k": EVIL})
    assert "\x9b" not in capsys.readouterr().out


@pytest.mark.parametrize("meta", [b"\xff\xfe binary", b"[1]", b'{"size": "3"}', b"{"])
def test_a_damaged_checksum_record_is_one_line(tmp_path, store, meta):
    store.put_file(_file(tmp_path, "abc"), "a/b.txt")
    (store.root / ".meta" / "a" / "b.txt.json").write_bytes(meta)
    for args in (["get", "a/b.txt", str(tmp_path / "o")],):
        assert_one_line_error(runner.invoke(app, ["store", *args]), "checksum record", "damaged")
    with pytest.raises(StorageError, match="damaged"):
        store.get_json("a/b.txt")


@pytest.mark.parametrize("manifest", [{"files": {"a": "x"}}, {"files": {"a": {"size": 1}}}, {"files": []}])
def test_a_manifest_of_the_wrong_shape_is_one_line(tmp_path, store, manifest):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("x")
    store.put_dir(d, "p")
    store.put_json("p/_SUCCESS", manifest)
    assert_one_line_error(runner.invoke(app, ["store", "get", "p", str(tmp_path / "o")]), "not a charops manifest")
    assert not (tmp_path / "o").exists()


def test_a_key_that_is_not_utf8_is_listed_escaped(tmp_path, store):
    """A file put into a local store by hand under a name that is not UTF-8 decodes to a lone
    surrogate, which no terminal or JSON writer accepts raw."""
    store.root.mkdir(parents=True)
    Path(os.fsdecode(bytes(store.root) + b"/w\xff.bin")).write_bytes(b"x")
    res = runner.invoke(app, ["store", "ls"])
    assert res.exit_code == 0 and res.stdout == "w\\udcff.bin\n"
    res = runner.invoke(app, ["store", "ls", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == ["w\udcff.bin"]
