"""``alignkit train``: fine-tune as a recipe says, on one process or several (it launches them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from alignkit.cli.common import console, is_main_process
from alignkit.engine.launch import launch_workers
from alignkit.engine.trainer import train
from alignkit.recipe import load_recipe


def train_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the run folder's latest checkpoint")] = False,
) -> None:
    """Fine-tune a model as the recipe says (launches the worker processes when it asks for several)."""
    r = load_recipe(recipe, overrides or [])
    processes = r.distributed.num_processes
    if processes > 1 and "WORLD_SIZE" not in os.environ:
        args = ["train", str(recipe), *(overrides or []), *(["--resume"] if resume else [])]
        raise typer.Exit(launch_workers(args, processes))
    result = train(r, resume=resume)
    if is_main_process():
        shown = {k: round(v, 4) for k, v in result.final_metrics.items() if k in ("loss", "rewards/margins")}
        console.print(f"done: {result.steps} steps, {shown}; run folder {result.output_dir}")
