"""The ``alignkit`` app: the engine's commands, then those plugins add through ``alignkit_register_commands``."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from torch.distributed.elastic.multiprocessing.errors import record

from alignkit import __version__
from alignkit.cli.common import examples, user_errors
from alignkit.cli.recipes import plugins_command, recipes_command, validate_command
from alignkit.cli.train import train_command
from alignkit.malloc import keep_freed_memory
from alignkit.plugins import DISABLE_ENV, get_plugins


def _options(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
    no_inline: Annotated[bool, typer.Option("--no-inline-plugins", help="never import an alignkit_plugins.py beside "
                                            f"a recipe or in a run folder (as {DISABLE_ENV}=inline)")] = False,
) -> None:
    if version:
        typer.echo(f"alignkit {__version__}")
        raise typer.Exit()
    if no_inline:  # the environment carries it to launched workers too
        os.environ[DISABLE_ENV] = ",".join(filter(None, [os.environ.get(DISABLE_ENV), "inline"]))
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


EXAMPLES = {
    "train": ("alignkit train recipes/llamagen_b_cca.toml", "alignkit train my.toml optim.lr=2e-5 --resume",
              "alignkit train my.toml --nnodes 2 --rdzv-endpoint node0:29400   # the same on both machines"),
    "validate": ("alignkit validate recipes/var_d16_cca.toml",
                 "alignkit validate my.toml optim.lr=1e-4 --no-check-paths"),
    "recipes": ("alignkit recipes", "alignkit recipes var_d16_cca > my_var.toml"),
    "plugins": ("alignkit plugins", "alignkit --no-inline-plugins plugins --json"),
}


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="alignkit", invoke_without_command=True, add_completion=False, pretty_exceptions_enable=False,
        help="Condition Contrastive Alignment and its successors for autoregressive image generators.",
        rich_markup_mode=None)
    app.callback()(_options)
    for name, command in (("train", train_command), ("validate", validate_command), ("recipes", recipes_command),
                          ("plugins", plugins_command)):
        app.command(name, epilog=examples(*EXAMPLES[name]))(user_errors(command))
    try:
        get_plugins().pm.hook.alignkit_register_commands(app=app)
    except Exception as exc:  # a plugin's CLI must not take the built-in commands down
        typer.echo(f"warning: a plugin failed to add its commands: {type(exc).__name__}: {exc}", err=True)
    return app


app = build_app()


def main() -> None:
    keep_freed_memory()
    # a worker under torch.distributed.run leaves a traceback in its per-rank error file
    (record(app) if "TORCHELASTIC_ERROR_FILE" in os.environ else app)()
