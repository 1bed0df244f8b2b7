"""``alignkit train``: fine-tune as a recipe says, on one process or several (it launches them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from alignkit.cli.common import console, is_main_process
from alignkit.engine.launch import launch_workers
from alignkit.engine.trainer import train
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe


def train_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the run folder's latest checkpoint")] = False,
    nnodes: Annotated[int, typer.Option(min=1, help="machines; run the same command on each")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="with --nnodes > 1: HOST:PORT where the machines meet "
                                                      "(the same on every machine)")] = None,
) -> None:
    """Fine-tune a model as the recipe says; distributed.num_processes > 1 launches that many workers per
    machine through torch.distributed.run (or run it under torchrun yourself).
    """
    r = load_recipe(recipe, overrides or [])
    processes = r.distributed.num_processes
    if (processes > 1 or nnodes > 1) and "WORLD_SIZE" not in os.environ:
        if nnodes > 1 and not rdzv_endpoint:
            raise AlignkitError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")
        args = ["train", str(recipe), *(overrides or []), *(["--resume"] if resume else [])]
        raise typer.Exit(launch_workers(args, processes, nnodes, rdzv_endpoint))
    result = train(r, resume=resume)
    if is_main_process():
        shown = {k: round(v, 4) for k, v in result.final_metrics.items() if k in ("loss", "rewards/margins")}
        console.print(f"done: {result.steps} steps, {shown}; run folder {result.output_dir}")
