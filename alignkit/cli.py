"""The ``alignkit`` command line."""

from __future__ import annotations

import functools
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from alignkit.errors import AlignkitError
from alignkit.bench.command import bench_command
from alignkit.evaluation.command import eval_command
from alignkit.plan_command import plan_command
from alignkit.sample_command import sample_command

app = typer.Typer(
    name="alignkit",
    help="Condition Contrastive Alignment (and DPO, Unlearning, NCA) for autoregressive image generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print an ``AlignkitError`` as one line on stderr and exit with its code, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlignkitError as exc:
            if int(os.environ.get("RANK", "0")) == 0:  # worker processes would repeat the same line
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ plugins


@app.command("plugins")
@user_errors
def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array of {kind, name, plugin, summary}")] = False,
) -> None:
    """List every registered component (objectives, samplers, backbones, tokenizers, …) and its plugin."""
    from alignkit.plugins import get_plugins

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
        presets = getattr(c.spec, "presets", {})
        name = c.name + (f" ({', '.join(presets)})" if presets else "")
        origin = c.plugin if c.plugin not in plugins.builtin else f"{c.plugin} (built-in)"
        table.add_row(c.kind, name, origin, c.summary)
    console.print(table)


# ------------------------------------------------------------------------------------ recipes


def recipes_dir() -> Path | None:
    """The shipped recipes: the ``recipes/`` folder of a source checkout, else the installed copy."""
    checkout = Path(__file__).resolve().parent.parent / "recipes"
    if checkout.is_dir():
        return checkout
    try:
        import alignkit_recipes

        return Path(alignkit_recipes.__path__[0])
    except ImportError:
        return None


@app.command("recipes")
@user_errors
def recipes_command(
    name: Annotated[str | None, typer.Argument(help="print this recipe (to copy and edit: > my.toml)")] = None,
) -> None:
    """List the shipped recipes, or print one."""
    folder = recipes_dir()
    files = sorted(folder.glob("*.toml")) if folder else []
    if name is not None:
        match = [f for f in files if f.stem == name or f.name == name]
        if not match:
            from alignkit.errors import did_you_mean

            raise AlignkitError(f"no shipped recipe '{name}'{did_you_mean(name, [f.stem for f in files])}; "
                                "see 'alignkit recipes'")
        typer.echo(match[0].read_text(), nl=False)
        return
    table = Table(title=f"recipes in {folder}", title_justify="left")
    for column in ("name", "backbone", "objective", "description"):
        table.add_column(column, overflow="fold")
    for f in files:
        data = tomllib.loads(f.read_text())
        table.add_row(f.stem, str(data.get("model", {}).get("backbone", "")),
                      str(data.get("objective", {}).get("name", "")), str(data.get("description", "")))
    console.print(table)


@app.command("validate")
@user_errors
def validate_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    check_paths: Annotated[bool, typer.Option("--check-paths/--no-check-paths",
                                              help="require input files (checkpoints, data) to exist")] = True,
) -> None:
    """Check a recipe: keys, types, plugin names, files. Exit status 2 on the first problem."""
    from alignkit.recipe import load_recipe

    r = load_recipe(recipe, overrides or [], check_paths=check_paths)
    table = Table(title=f"{recipe} is valid", title_justify="left", show_header=False)
    table.add_column("section", style="bold")
    table.add_column("settings", overflow="fold")
    for section in ("model", "tokenizer", "data", "objective", "sampler", "reference", "optim", "distributed", "output"):
        value = getattr(r, section)
        if value is None:
            continue
        settings = value.model_dump(exclude_none=True)
        settings = {k: v for k, v in settings.items() if k not in (value.model_extra or {})}
        if hasattr(value, "_config") and value._config is not None:
            settings.update(value._config.model_dump(exclude_none=True))
        if section == "sampler":
            settings["uncond_ratio"] = r.uncond_ratio
        table.add_row(section, ", ".join(f"{k}={v}" for k, v in settings.items()))
    console.print(table)


# ------------------------------------------------------------------------------------ train


@app.command("train")
@user_errors
def train_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the run folder's latest checkpoint")] = False,
) -> None:
    """Fine-tune a model as the recipe says (launches the worker processes when it asks for several)."""
    from alignkit.recipe import load_recipe

    r = load_recipe(recipe, overrides or [])
    processes = r.distributed.num_processes
    if processes > 1 and "WORLD_SIZE" not in os.environ:
        from alignkit.engine.launch import launch_workers

        args = ["train", str(recipe), *(overrides or []), *(["--resume"] if resume else [])]
        raise typer.Exit(launch_workers(args, processes))
    from alignkit.engine.trainer import train

    result = train(r, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        shown = {k: round(v, 4) for k, v in result.final_metrics.items() if k in ("loss", "rewards/margins")}
        console.print(f"done: {result.steps} steps, {shown}; run folder {result.output_dir}")


app.command("sample")(sample_command)
app.command("eval")(eval_command)
app.command("plan")(plan_command)
app.command("bench")(user_errors(bench_command))


@app.command("extract")
@user_errors
def extract_command(
    tokenizer: Annotated[str, typer.Option(help="tokenizer plugin, e.g. llamagen-vq-16 or var-vqvae")],
    images: Annotated[Path, typer.Option(help="image folder with one subfolder per class (ImageFolder)")],
    out: Annotated[Path, typer.Option(help="output folder: codes/, labels/, meta.json")],
    checkpoint: Annotated[Path | None, typer.Option(help="tokenizer weights (official layout)")] = None,
    ten_crop: Annotated[bool, typer.Option("--ten-crop", help="10 variants per image (5 crops × flip), as the "
                                           "official ImageNet codes; else the image and its mirror")] = False,
    image_size: Annotated[int | None, typer.Option(help="crop size (default: the tokenizer's)")] = None,
    crop_range: Annotated[float, typer.Option(help="with --ten-crop, crop from image_size × this")] = 1.1,
    batch_size: Annotated[int, typer.Option(help="images per tokenizer batch")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, … (default: cuda when available)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="tokenizer config key=value")] = None,
) -> None:
    """Tokenize an image folder into the official pre-extracted code layout (resumable)."""
    from alignkit.extract import extract_main

    config = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise AlignkitError(f"--set {item!r}: expected key=value")
        try:
            config[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            config[key] = raw
    meta = extract_main(tokenizer, checkpoint, images, out, config=config, ten_crop=ten_crop, image_size=image_size,
                        crop_range=crop_range, batch_size=batch_size, device=device)
    console.print(f"{meta['num_images']} images × {meta['augmentations']} variants of {meta['seq_len']} tokens "
                  f"in {out}")


# ------------------------------------------------------------------------------------ entry


def _add_plugin_commands() -> None:
    from alignkit.plugins import get_plugins

    try:
        get_plugins().pm.hook.alignkit_register_commands(app=app)
    except Exception as exc:  # a plugin's CLI must not take the built-in commands down
        typer.echo(f"warning: a plugin failed to add its commands: {type(exc).__name__}: {exc}", err=True)


def main() -> None:
    _add_plugin_commands()
    app()


if __name__ == "__main__":
    sys.exit(main())
