"""``charops model``: base models.

    charops model init                          # tiny default base model in runs/base
    charops model init --config micro --output /tmp/base seed=3
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, echo_json, new_app

app = new_app("Base models: build the embedded default, inspect.")


@app.command("init")
def init(
    overrides: OverridesArg = None,
    config: ConfigOpt = "tiny",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output directory (default: output_dir of the config).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output directory.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the embedded base model: BPE tokenizer on the bundled corpus, ChatML template, random weights."""
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    extra = list(overrides or [])
    if output:
        extra.append(f"output_dir={output}")
    if overwrite:
        extra.append("overwrite=true")
    summary = run(load_config(ModelInitConfig, config, extra))
    if as_json:
        echo_json(summary)
        return
    typer.echo(f"wrote {summary['output_dir']}: {summary['architecture']}, "
               f"{summary['parameters']:,} parameters, vocabulary {summary['vocab_size']}")
    typer.echo(f"  tokenizer sha256 {summary['tokenizer_sha256'][:16]}  ({summary['corpus_texts']} corpus texts)")
