"""The paper recipes (this folder's ``*.toml``), registered for ``alignkit recipes`` like any plugin's."""

from pathlib import Path

from alignkit import hookimpl


@hookimpl
def alignkit_register_recipes():
    return [Path(__file__).resolve().parent]
