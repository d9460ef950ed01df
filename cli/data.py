"""``charops data``: check and prepare character data.

    charops data validate data/ --rejects rejects.jsonl
    charops data validate chats.jsonl --format messages --character 林小满 --strict --json
    charops data prepare --model runs/base --out runs/dataset
    charops data prepare data/ --model runs/base --out runs/dataset max_seq_len=512 --strict
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from charops.cli.common import ConfigOpt, JsonOpt, QuietOpt, echo_json, new_app
from charops.data.importers import FORMATS
from charops.errors import DataError

app = new_app(help="Check and prepare character data (profiles, dialogues, preference pairs, text).")

Format = Enum("Format", {name: name for name in ("auto", *FORMATS)}, type=str)  # type: ignore[misc]

# Option aliases shared by the commands of this group.
PathsArg = Annotated[list[str], typer.Argument(help="Input files or directories (every .jsonl/.json/.txt inside).",
                                               show_default=False)]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Input format of every file (auto: detected per file).")]
CharacterOpt = Annotated[str | None, typer.Option("--character", help="Character of chat records that do not name one.")]
RejectsOpt = Annotated[str | None, typer.Option("--rejects", help="Write every reject to this JSONL file.")]


def _print_summary(summary: dict[str, Any], dropped: dict[str, int]) -> None:
    typer.echo(f"read {summary['read']}  accepted {summary['accepted']}  rejected {summary['rejected']}")
    typer.echo("accepted: " + ", ".join(f"{n} {t}" for t, n in summary["accepted_by_type"].items())
               + (f" ({summary['eval_prompts']} evaluation prompts)" if summary["eval_prompts"] else ""))
    if any(dropped.values()):
        typer.echo("exact duplicates dropped: " + ", ".join(f"{n} {t}" for t, n in dropped.items() if n))
    if summary["rejected_by_reason"]:
        typer.echo("rejected, by reason:")
        for reason, n in summary["rejected_by_reason"].items():
            typer.echo(f"  {n:>6}  {reason}")
    typer.echo("sources:")
    for s in summary["sources"]:
        typer.echo(f"  {s['path']}  [{s['format']}]  read {s['read']}  accepted {s['accepted']}  "
                   f"rejected {s['rejected']}")
    for s in summary["skipped_files"]:
        typer.echo(f"  {s['path']}  skipped: {s['reason']}")
    missing = summary.get("characters_without_profile")
    if missing:
        typer.echo("characters without a profile (kept; add profiles for them): " + ", ".join(missing))
    for what in summary["not_checked"]:
        typer.echo(f"not checked: {what}")


@app.command()
def validate(
    paths: PathsArg,
    fmt: FormatOpt = Format.auto,
    character: CharacterOpt = None,
    rejects: RejectsOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Also check lengths with this model's tokenizer and chat template, as data prepare does.")] = None,
    max_seq_len: Annotated[int | None, typer.Option("--max-seq-len", help="With --model: longest example in tokens (default: the data preset's).", show_default=False)] = None,
    max_record_bytes: Annotated[int | None, typer.Option("--max-record-bytes", help="Larger records are rejected unread (default: the data preset's).", show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail when any record is rejected.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import, normalise and check data; report what is accepted and what is rejected, and why.

    With --model it rejects exactly what `data prepare` would (records too long for
    max_seq_len too). Exits non-zero when nothing is accepted, or (with --strict) when anything
    is rejected.
    """
    from charops.config import load_config
    from charops.data.prepare import TOO_LONG, PrepareConfig, check_lengths, check_position_limit
    from charops.data.validate import check_rejects_path, load_and_check, write_rejects

    extra = [f"{k}={v}" for k, v in (("model", model), ("max_seq_len", max_seq_len),
                                     ("max_record_bytes", max_record_bytes)) if v is not None]
    cfg = load_config(PrepareConfig, "default", extra)
    if rejects:
        check_rejects_path(rejects)
    tokenizer = None
    if model:
        from charops.model.load import load_tokenizer, resolve_model

        model_dir = resolve_model(model)
        cfg.max_seq_len = check_position_limit(model_dir, cfg.max_seq_len)
        tokenizer = load_tokenizer(model_dir)
    result, dropped = load_and_check(paths, fmt=fmt.value, character=character,
                                     max_record_bytes=cfg.max_record_bytes)
    if rejects:
        check_rejects_path(rejects, result)
    if tokenizer is not None:
        result = check_lengths(result, cfg, tokenizer)
    summary = result.summary() | {"duplicates_dropped": dropped, "not_checked": [] if model else [
        f"{TOO_LONG} (needs the tokenizer: pass --model)"]}
    if as_json:
        echo_json(summary)
    elif not quiet:
        _print_summary(summary, dropped)
    if rejects:
        write_rejects(rejects, result.rejects)
        if not as_json and not quiet:
            typer.echo(f"rejects written to {rejects}")
    if summary["accepted"] == 0:
        raise DataError(f"no record accepted from {', '.join(paths)} (see the reasons above)")
    if strict and summary["rejected"]:
        raise DataError(f"{summary['rejected']} of {summary['read']} records rejected (--strict)")


@app.command()
def prepare(
    args: Annotated[list[str] | None, typer.Argument(
        help="Input files or directories, and key=value config overrides (default inputs: the bundled samples).",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model whose tokenizer and chat template to use (dir, s3:// or hub id).")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Dataset directory to write.")] = None,
    config: ConfigOpt = "default",
    fmt: FormatOpt = Format.auto,
    character: CharacterOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail, writing nothing, when any record is rejected.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output directory.")] = False,
    allow_empty_split: Annotated[bool, typer.Option("--allow-empty-split", help="Write the dataset even when a train or validation split is empty (a warning, not an error).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Tokenize character data with a model's chat template into a dataset directory (SFT, DPO, pretraining, eval).

    Exits non-zero when nothing is accepted, or (with --strict) when anything is rejected;
    the directory appears only when complete.
    """
    from pathlib import Path

    from charops.config import load_config
    from charops.data.prepare import PrepareConfig, run

    # One variadic argument carries both: an existing path is an input, NAME=VALUE an override.
    paths = [a for a in args or [] if "=" not in a or Path(a).exists()]
    overrides = [a for a in args or [] if a not in paths]
    extra = [f"inputs={','.join(paths)}"] if paths else []
    if model:
        extra.append(f"model={model}")
    if out:
        extra.append(f"output_dir={out}")
    if fmt != Format.auto:
        extra.append(f"format={fmt.value}")
    if character:
        extra.append(f"character={character}")
    extra += ["strict=true"] * strict + ["overwrite=true"] * overwrite + ["progress=false"] * (quiet or as_json)
    extra += ["allow_empty_split=true"] * allow_empty_split
    manifest = run(load_config(PrepareConfig, config, [*overrides, *extra]))
    for warning in manifest["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(manifest)
        return
    if quiet:
        return
    c, t = manifest["counts"], manifest["tokens"]
    typer.echo(f"wrote {manifest['output_dir']}")
    typer.echo(f"read {c['read']}  accepted {c['accepted']}  rejected {c['rejected']}"
               + (f"  (exact duplicates dropped: {sum(c['duplicates_dropped'].values())})"
                  if any(c["duplicates_dropped"].values()) else ""))
    for reason, n in c["rejected_by_reason"].items():
        typer.echo(f"  {n:>6}  {reason}")
    for name in ("sft", "dpo"):
        typer.echo(f"{name}: train {c[name]['train']}  validation {c[name]['validation']}  "
                   f"(train tokens {t[name]['train']['tokens']}, max length {t[name]['train']['max_length']})")
    typer.echo(f"pretrain: {c['pretrain_blocks']['train']} + {c['pretrain_blocks']['validation']} blocks of "
               f"{t['block_size']} from {sum(c['pretrain_documents'].values())} documents")
    typer.echo(f"eval prompts: {c['eval_prompts']}   tokenizer {manifest['tokenizer']['sha256'][:16]}")


CardFormat = Enum("CardFormat", {"v2": "v2", "v3": "v3"}, type=str)  # type: ignore[misc]


@app.command("export-card")
def export_card(
    paths: PathsArg,
    name: Annotated[str | None, typer.Option("--name", help="The profile to export (needed when the inputs hold several).")] = None,
    fmt: Annotated[CardFormat, typer.Option("--format", "-f", help="Character card spec version.")] = CardFormat.v3,
    png: Annotated[str | None, typer.Option("--png", help="Embed the card in this PNG image (written to --out, the image is not changed).")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Card file to write: .png, .charx or .json (default: NAME.FORMAT.png with --png, else .json).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a character profile as a TavernAI/SillyTavern character card (V2 or V3; JSON, PNG or CHARX).

    A profile read from a card is written back field for field (lorebook and extensions included).
    """
    from charops.data.export_card import export_card as export

    target = export(paths, version=fmt.value, name=name, out=out, image=png, overwrite=overwrite)
    if as_json:
        echo_json({"card": str(target), "format": fmt.value})
    elif not quiet:
        typer.echo(f"card written to {target}")
