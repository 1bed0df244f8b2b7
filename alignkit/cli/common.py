"""What every command shares: the console, one-line user errors, and the rank that speaks."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from alignkit.errors import AlignkitError

console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def is_main_process() -> bool:
    """Rank 0, or a single process (worker processes would repeat every line)."""
    return int(os.environ.get("RANK", "0")) == 0


def user_errors(fn: F) -> F:
    """Print an ``AlignkitError`` as one line on stderr and exit with its code, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlignkitError as exc:
            if is_main_process():
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog for a command's ``--help`` (lines kept as written)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
