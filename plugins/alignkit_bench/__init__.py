"""``alignkit bench``, the paper's comparison on data a CPU can handle, and what it runs on: toy
patch tokenizers for LlamaGen (raster) and VAR (multi-scale) and an ``images`` dataset (the embedded
MNIST digits, or any labelled image folder). Its recipes are ``benchmarks/bench_*.toml``."""

from alignkit import DatasetSpec, TokenizerSpec, hookimpl

from alignkit_bench.dataset import ImageDataset, ImagesConfig
from alignkit_bench.tokenizers import (PatchMSVQ, PatchMSVQConfig, PatchVQ, PatchVQConfig, build_multiscale,
                                       build_raster)

__all__ = ["ImageDataset", "ImagesConfig", "PatchMSVQ", "PatchMSVQConfig", "PatchVQ", "PatchVQConfig"]


@hookimpl
def alignkit_register_tokenizers():
    return [
        TokenizerSpec("patch-vq", build_raster, PatchVQConfig,
                      "toy raster tokenizer: k-means codes of pixel patches (LlamaGen on a CPU)",
                      needs_checkpoint=False),
        TokenizerSpec("patch-msvq", build_multiscale, PatchMSVQConfig,
                      "toy multi-scale tokenizer: VAR's residual quantiser on pixel patches (VAR on a CPU)",
                      needs_checkpoint=False),
    ]


@hookimpl
def alignkit_register_datasets():
    return [DatasetSpec("images", ImageDataset, ImagesConfig,
                        "labelled images (embedded MNIST, a class folder or an .npz), tokenized once and cached")]


@hookimpl
def alignkit_register_commands(app):
    from alignkit.cli.common import examples, user_errors
    from alignkit_bench.command import bench_command

    epilog = examples(
        "alignkit bench --quick",
        "alignkit bench --backbone var --objectives cca,dpo --out bench-var",
    )
    app.command("bench", epilog=epilog)(user_errors(bench_command))
