"""``alignkit plugins``, ``alignkit recipes`` and ``alignkit validate``: what is installed, what ships, what a recipe says."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from alignkit.cli.common import console
from alignkit.sample.options import recipe_sampling
from alignkit.engine.build import build_dataset, build_objective
from alignkit.engine.trainer import check_data_fits
from alignkit.errors import AlignkitError, did_you_mean
from alignkit.plugins import get_plugins
from alignkit.recipe import Recipe, load_recipe


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of {kind, name, plugin, summary}")] = False,
) -> None:
    """List every registered component (objectives, samplers, backbones, tokenizers, …) and its plugin."""
    plugins = get_plugins()
    components = plugins.components()
    for name, reason in sorted(plugins.failures.items()):
        typer.echo(f"warning: plugin '{name}' was skipped: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps([{"kind": c.kind, "name": c.name, "plugin": c.plugin, "summary": c.summary}
                               for c in components], indent=2))
        return
    table = Table(title="alignkit components", title_justify="left")
    for column in ("kind", "name", "plugin", "summary"):
        table.add_column(column, overflow="fold")
    for c in components:
        presets = c.spec.presets
        name = c.name + (f" ({', '.join(presets)})" if presets else "")
        origin = c.plugin if c.plugin not in plugins.builtin else f"{c.plugin} (built-in)"
        table.add_row(c.kind, name, origin, c.summary)
    console.print(table)


def shipped_recipes() -> list[Path]:
    """Every recipe in the folders plugins register (``alignkit_register_recipes``), by name."""
    folders = [Path(f) for found in get_plugins().pm.hook.alignkit_register_recipes() for f in found]
    return sorted((f for folder in folders for f in folder.glob("*.toml")), key=lambda f: f.stem)


def recipes_command(
    name: Annotated[str | None, typer.Argument(help="print this recipe (to copy and edit: > my.toml)")] = None,
) -> None:
    """List the shipped recipes, or print one."""
    files = shipped_recipes()
    if name is not None:
        match = [f for f in files if f.stem == name or f.name == name]
        if not match:
            raise AlignkitError(f"no shipped recipe '{name}'{did_you_mean(name, [f.stem for f in files])}; "
                                "see 'alignkit recipes'")
        typer.echo(match[0].read_text(), nl=False)
        return
    folders = ", ".join(sorted({str(f.parent) for f in files})) or "no folder"
    table = Table(title=f"recipes in {folders}", title_justify="left")
    for column in ("name", "backbone", "objective", "description"):
        table.add_column(column, overflow="fold")
    for f in files:
        data = tomllib.loads(f.read_text())
        table.add_row(f.stem, str(data.get("model", {}).get("backbone", "")),
                      str(data.get("objective", {}).get("name", "")), str(data.get("description", "")))
    console.print(table)


def validate_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    check_paths: Annotated[bool, typer.Option("--check-paths/--no-check-paths",
                                              help="require input files (checkpoints, data) to exist")] = True,
) -> None:
    """Check a recipe: keys, types, plugin names, files and, as train does before step 1, the data, objective
    and [sample] against the model (built without weights). Exit status 2 on the first problem."""
    r = load_recipe(recipe, overrides or [], check_paths=check_paths)
    if check_paths and (r.data is not None or r.sample.model_extra):
        check_fit(r)
    table = Table(title=f"{recipe} is valid", title_justify="left", show_header=False)
    table.add_column("section", style="bold")
    table.add_column("settings", overflow="fold")
    for section in ("model", "tokenizer", "data", "objective", "sampler", "reference", "optim", "distributed", "output",
                    "sample"):
        value = getattr(r, section)
        if value is None:
            continue
        settings = {k: v for k, v in r.settings(section).items() if v is not None}
        if section == "sampler":
            settings["uncond_ratio"] = r.uncond_ratio
        table.add_row(section, ", ".join(f"{k}={v}" for k, v in settings.items()))
    console.print(table)


def check_fit(recipe: Recipe) -> None:
    """The backbone on the meta device (no weights read), checked with the objective, data and ``[sample]``."""
    with torch.device("meta"):
        policy = recipe.model.build(checkpoint=None, tokenizer=None)
    recipe_sampling(recipe, policy)
    build_objective(recipe, policy)
    if recipe.data is not None:
        check_data_fits(recipe, policy, build_dataset(recipe))
