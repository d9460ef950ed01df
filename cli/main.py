"""Entry point of the ``charops`` command.

    charops --help
    charops version
"""

from __future__ import annotations

import platform
from typing import Annotated

import typer

from charops import __version__
from charops.cli import (
    chat,
    data,
    deploy,
    evaluate,
    feedback,
    model,
    pipeline,
    playground,
    promote,
    registry,
    runs,
    schedule,
    serve,
    store,
    train,
)
from charops.cli.common import STATE, CharopsGroup, JsonOpt, echo_json

app = typer.Typer(
    cls=CharopsGroup,
    help="charops: train, evaluate and serve character role-play chat models on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    STATE.debug = debug


@app.command()
def version(
    as_json: JsonOpt = False,
) -> None:
    """Print the charops version and the versions of the stack it runs on."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    info = {"charops": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "deepspeed", "kfp", "kserve"):
        try:
            info[pkg] = pkg_version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    if as_json:
        echo_json(info)
    else:
        typer.echo(f"charops {__version__}")
        for k, v in info.items():
            if k != "charops":
                typer.echo(f"  {k:<13} {v or 'not installed'}")


# Command groups, one module each (cli/<group>.py defines `app`); pipeline commands are top level.
app.command("submit")(pipeline.submit)
app.command("compile")(pipeline.compile)
app.command("serve")(serve.serve)
app.command("deploy", context_settings=deploy.DEPLOY_CONTEXT)(deploy.deploy)
app.command("rollback")(deploy.rollback)
app.command("chat")(chat.chat)
app.command("playground")(playground.playground)
app.command("promote")(promote.promote)
app.add_typer(data.app, name="data")
app.add_typer(model.app, name="model")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="eval")
app.add_typer(runs.app, name="runs")
app.add_typer(store.app, name="store")
app.add_typer(feedback.app, name="feedback")
app.add_typer(schedule.app, name="schedule")
app.add_typer(registry.app, name="registry")
app.add_typer(registry.deprecated_app, name="models", hidden=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
