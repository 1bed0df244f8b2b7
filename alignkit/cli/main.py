"""The ``alignkit`` app: the engine's commands, then those plugins add through ``alignkit_register_commands``."""

from __future__ import annotations

import typer

from alignkit.cli.common import user_errors
from alignkit.cli.recipes import plugins_command, recipes_command, validate_command
from alignkit.cli.sample import sample_command
from alignkit.cli.train import train_command
from alignkit.plugins import get_plugins


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="alignkit",
        help="Condition Contrastive Alignment and its successors for autoregressive image generators.",
        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    for name, command in (("train", train_command), ("sample", sample_command), ("validate", validate_command),
                          ("recipes", recipes_command), ("plugins", plugins_command)):
        app.command(name)(user_errors(command))
    try:
        get_plugins().pm.hook.alignkit_register_commands(app=app)
    except Exception as exc:  # a plugin's CLI must not take the built-in commands down
        typer.echo(f"warning: a plugin failed to add its commands: {type(exc).__name__}: {exc}", err=True)
    return app


app = build_app()


def main() -> None:
    app()
