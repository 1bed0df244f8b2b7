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
    seeds: Annotated[int | None, typer.Option(help="seeds of every reported row: fine-tuning data order, pair "
                                              "sampler and sampling (default 3; --quick 2)")] = None,
    split_seed: Annotated[int, typer.Option(help="seed of the train / validation / test split")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="a small run of the whole path (a minute or two; its "
                                        "numbers mean nothing)")] = False,
    inception: Annotated[bool | None, typer.Option("--inception/--no-inception",
                                                   help="also Inception FID (default: when its weights are "
                                                        "installed; slow on a CPU)")] = None,
) -> None:
    """Pretrain a small model, select every method's setting on validation data, fine-tune at several
    seeds and compare on held-out data, with intervals and a verdict for each of the CCA paper's findings."""
    names = [name.strip() for name in objectives.split(",") if name.strip()]
    Bench(backbone, names, data, out, QUICK if quick else DEFAULT, split_seed=split_seed, seeds=seeds,
          inception=inception, console=console).run()
