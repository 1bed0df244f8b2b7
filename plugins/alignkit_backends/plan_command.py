"""``alignkit plan``: per-GPU memory of a recipe under every ZeRO setting, and the cheapest that fits.

    alignkit plan recipes/llamagen_3b_cca.toml --gpus 8 --gpu-memory 80
    alignkit plan recipes/var_d30_cca.toml --gpus 4 --gpu-memory 40 --cpu-memory 512 --json

The formulas and what "cheapest" means: ``alignkit_backends.plan``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from alignkit.recipe import load_recipe
from alignkit_backends.plan import SAFETY_MARGIN, GiB, Plan, plan

PARTS = {"params": "params", "grads": "grads", "optimizer": "optim", "reference": "ref", "activations": "activ",
         "buffers": "buffers"}
"""Memory fields and their column headers."""


def plan_command(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML file")],
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="memory of each GPU, GiB")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs, one process each (default: the recipe's "
                                             "distributed.num_processes)")] = None,
    cpu_memory: Annotated[float | None, typer.Option("--cpu-memory", help="CPU memory per node, GiB (checked when "
                                                     "given)")] = None,
    gpus_per_node: Annotated[int | None, typer.Option(help="GPUs per node (default: min(gpus, 8))")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="images per forward pass and GPU (default: the "
                                                         "recipe's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Per-GPU memory (parameters, gradients, optimizer, reference, activations) under ZeRO 0–3 with and
    without offload, and the cheapest setting that fits with a 10% margin."""
    r = load_recipe(recipe, overrides or [], check_paths=False)
    gpus = r.distributed.num_processes if gpus is None else gpus
    result = plan(r, gpus, gpu_memory, cpu_memory_gib=cpu_memory, micro_batch_size=micro_batch_size,
                  gpus_per_node=gpus_per_node)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print(result)


def _print(result: Plan) -> None:
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log or a pipe gets the whole table
    s = result.shape
    title = (f"{result.backbone}: {s.params / 1e6:,.0f}M parameters, micro-batch {result.micro_batch_size}, "
             f"{result.gpus} × {result.gpu_memory_gib:g} GiB GPUs ({result.gpus_per_node} per node): GiB per GPU")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ZeRO", justify="right", no_wrap=True)
    table.add_column("offload", no_wrap=True)
    for column in (*PARTS.values(), "states", "total", "CPU/node", "fits", "max micro"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for row in result.rows:
        m, setting = row.memory, row.setting
        offload = "+".join(part for part, on in (("opt", setting.offload_optimizer),
                                                 ("params", setting.offload_params)) if on) or "-"
        note = ", ".join(mark for mark, hit in (("recipe", setting == result.recipe_setting),
                                                ("cheapest", setting == result.recommended)) if hit)
        values = [getattr(m, part) / GiB for part in PARTS] + [m.model_states / GiB, m.total / GiB, m.cpu / GiB]
        table.add_row(str(setting.zero_stage), offload, *(f"{v:.2f}" for v in values),
                      "yes" if row.fits else "[red]no[/]", str(row.max_micro_batch_size or "-"), note)
    console.print(table)
    console.print(f"states = params + grads + optimizer (DeepSpeed's estimate at ZeRO-2/3); CPU/node: model states "
                  f"and the reference's load-time copy; fits: total within {1 - SAFETY_MARGIN:.0%} of the GPU"
                  + ("" if result.cpu_memory_gib is None else ", CPU/node within the node's memory"))
    if result.recommended is None:
        hint = {False: ', or set model.activation_checkpointing = "selective" (or true)',
                "selective": ", or set model.activation_checkpointing = true"}.get(s.checkpointing, "")
        console.print(f"[red]nothing fits[/], not even micro-batch 1: use more or larger GPUs{hint}")
        return
    advice = f"cheapest setting that fits: {result.recommended.label}"
    if result.recommended_micro_batch_size != result.micro_batch_size:
        advice += (f" with optim.micro_batch_size = {result.recommended_micro_batch_size} (micro-batch "
                   f"{result.micro_batch_size} does not fit)")
    console.print(advice)
