"""The ``alignkit extract`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignkit.cli.common import console
from alignkit.values import parse_pairs
from alignkit_data.extract import extract_main


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
    strict: Annotated[bool, typer.Option("--strict", help="stop at an unreadable image (default: skip it, and "
                                         "list it in meta.json)")] = False,
    random_init: Annotated[bool, typer.Option("--random-init", help="allow a tokenizer without --checkpoint "
                                              "(random weights: meaningless codes, for tests)")] = False,
) -> None:
    """Tokenize an image folder into the official pre-extracted code layout (resumable)."""
    meta = extract_main(tokenizer, checkpoint, images, out, config=parse_pairs(set_, "--set"), ten_crop=ten_crop,
                        image_size=image_size, crop_range=crop_range, batch_size=batch_size, device=device,
                        strict=strict, random_init=random_init)
    console.print(f"{meta['num_codes']} images × {meta['augmentations']} variants of {meta['seq_len']} tokens "
                  f"in {out}")
    if meta["skipped"]:
        shown = ", ".join(meta["skipped"][:10]) + (", …" if len(meta["skipped"]) > 10 else "")
        typer.echo(f"warning: skipped {len(meta['skipped'])} unreadable images (all listed in {out / 'meta.json'}): "
                   f"{shown}", err=True)
