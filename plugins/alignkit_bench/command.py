"""The ``alignkit bench`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignkit.cli.common import console
from alignkit_bench.settings import DEFAULT, OBJECTIVES, QUICK
from alignkit_bench.suite import Bench


def bench_command(
    objectives: Annotated[str, typer.Option(help="comma-separated objectives to compare")] = ",".join(OBJECTIVES),
    backbone: Annotated[str, typer.Option(help="llamagen (raster tokens) or var (multi-scale tokens)")] = "llamagen",
    data: Annotated[str, typer.Option(help="'mnist' (5,000 digits shipped with alignkit), a folder with one "
                                           "subfolder per class, or an .npz with images and labels")] = "mnist",
    out: Annotated[Path, typer.Option(help="output folder: results.json, grids/, fid_vs_is.png, runs/, samples/")]
    = Path("bench"),
    quick: Annotated[bool, typer.Option("--quick", help="a small run of the whole path (about a minute)")] = False,
    inception: Annotated[bool | None, typer.Option("--inception/--no-inception",
                                                   help="also Inception FID (default: when its weights are "
                                                        "installed; slow on a CPU)")] = None,
) -> None:
    """Pretrain a small model, fine-tune it with each objective, sample without guidance and compare
    with classifier-free guidance (the CCA paper's Tables 2–3 and Figure 4, on a CPU)."""
    names = [name.strip() for name in objectives.split(",") if name.strip()]
    Bench(backbone, names, data, out, QUICK if quick else DEFAULT, inception=inception, console=console).run()
