"""Shared CLI pieces: the error-handling group, option aliases and output helpers."""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from charops.errors import CharopsError


@dataclass
class _State:
    debug: bool = False


STATE = _State()


# Characters that drive a terminal rather than show: C0 (ESC starts colour, cursor, title and
# clear-screen sequences), DEL, C1 (0x9b is a one-byte CSI), and the bidi controls that make a
# line display in another order than it reads ("Trojan source").
# Lone surrogates are no characters at all (a file name that is not UTF-8 decodes to them):
# printed raw they make the write fail with UnicodeEncodeError.
_TERMINAL_CONTROLS = [*range(0x20), *range(0x7f, 0xa0), 0x200e, 0x200f, *range(0x202a, 0x202f),
                      *range(0x2066, 0x206a), *range(0xd800, 0xe000)]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _TERMINAL_CONTROLS}


def printable(text: str, keep: str = "") -> str:
    """``text`` safe to print on a terminal: every control character (and lone surrogate)
    becomes a visible escape (ESC -> ``\\x1b``), except those in ``keep`` (e.g. ``"\\n"`` for
    multi-line text).

    Use it on everything printed that came from outside: store keys, registry content, a
    server's model ids and error messages.
    """
    table = {c: e for c, e in _ESCAPES.items() if chr(c) not in keep} if keep else _ESCAPES
    return text.translate(table)


def error_line(message: str) -> None:
    """Print a user error the house way: one line on stderr (terminal controls escaped)."""
    typer.secho(f"error: {printable(' '.join(message.split()))}", err=True, fg="red")


class CharopsGroup(TyperGroup):
    """Top-level group: turns :class:`CharopsError` into a one-line error unless ``--debug``."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CharopsError as exc:
            if STATE.debug:  # the traceback, and still the exit code a script checks
                traceback.print_exc()
            error_line(str(exc))
            # typer vendors its own click: typer.Exit is the public way to set the exit code.
            raise typer.Exit(exc.exit_code) from None


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A command group with the house defaults."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None, **kwargs)


# Option aliases shared by command groups (Typer docs / `hf` CLI style).
ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Preset name (configs/<stage>/NAME.yaml) or path to a YAML file.")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="key=value overrides of config fields.", show_default=False)]
# Which command takes which: every command that does something and then prints a summary takes
# --json and -q (with both, the JSON is still printed and nothing else); a command whose output
# is the answer (version, lists, show, history, inspect, runs get) takes --json only, since -q
# would leave nothing; `chat` is interactive and takes neither (its --help says why).
# tests/unit/test_cli_consistency.py walks every command and holds them to this.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, progress lines or summary: errors only (the exit code tells).")]
# charops deploy: a local server runs until stopped, so it still says where it listens.
ServeQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines or summary: errors only (the exit code tells); a local server still prints its one 'serving ... at URL' line and its own log.")]
# Kubeflow Pipelines connection (charops submit, charops runs): see charops.pipeline.client.
HostOpt = Annotated[str | None, typer.Option("--host", help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT, else the kube context).", show_default=False)]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token for the API server (default: $KF_PIPELINES_TOKEN).", show_default=False)]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Kubeflow profile namespace (multi-user installs).", show_default=False)]


# json.dumps escapes C0 itself; these it would write raw (ensure_ascii=False keeps the text).
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _TERMINAL_CONTROLS if c >= 0x7f}  # \\udcff is valid JSON


def echo_json(obj: Any) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True)
    sys.stdout.write(text.translate(_JSON_ESCAPES) + "\n")
