"""User-facing errors.

Everything a user can fix (a recipe key, a missing file, an unknown plugin name) raises an
``AlignkitError``; the CLI prints its message on one line, without a traceback, and exits with
status 2. Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""

from __future__ import annotations

from difflib import get_close_matches
from collections.abc import Iterable
from typing import Any


class AlignkitError(Exception):
    """An error caused by the user's input, reported without a traceback."""

    exit_code = 2


class RecipeError(AlignkitError):
    """A problem in a recipe, located by file and dotted key path."""

    def __init__(self, file: object, key: str | None, message: str):
        self.file = str(file)
        self.key = key
        self.detail = message
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {message}")


class PluginError(AlignkitError):
    """A plugin conflict or an unknown component name."""


class CheckpointError(AlignkitError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validation_problems(exc: Any) -> str:
    """A pydantic ``ValidationError`` as ``key: message, got value; …`` on one line."""
    problems = []
    for error in exc.errors():
        text = error["msg"][0].lower() + error["msg"][1:]
        if "input" in error and not isinstance(error["input"], dict):
            text += f", got {error['input']!r}"
        problems.append(f"{'.'.join(map(str, error['loc'])) or '(config)'}: {text}")
    return "; ".join(problems)
