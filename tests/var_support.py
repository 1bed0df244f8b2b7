"""What the VAR tests share: the official tiny models and the outputs the official code recorded.

The files in ``fixtures/var/`` come from ``shared/fixtures/var`` (official VAR @ 78b9539 and
thu-ml/CCA @ 7d5a073 run on the CPU in fp32; see its README), xz-compressed where that helps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import alignkit
from alignkit.checkpoints import read_weights_file

FIXTURES = Path(__file__).parent / "fixtures" / "var"
VAR_TINY = FIXTURES / "var_tiny.pth.xz"
VAR_TINY_SALN = FIXTURES / "var_tiny_saln.pth.xz"
VAE_TINY = FIXTURES / "vae_tiny.pth.xz"

VAE_CONFIG = {"vocab_size": 32, "z_channels": 8, "ch": 32, "v_patch_nums": (1, 2, 3, 4)}
TINY = {"depth": 2, "embed_dim": 64, "num_heads": 4, "drop_path_rate": 0.0, "patch_nums": (1, 2, 3, 4),
        "num_classes": 1000, "V": 32, "Cvae": 8, "ch": 32}
"""``var_tiny``: the official constructor arguments of the fixture (L = 30, V = 32, null class 1000)."""
TINY_SALN = {**TINY, "num_classes": 10, "embed_dim": 32, "num_heads": 2, "shared_aln": True, "attn_l2_norm": False}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run as the fixtures were made (``torch.set_num_threads(1)``): the CPU conv kernels split their
    sums by thread count, which moves a decoded pixel by up to ~5e-5 through the 30-conv decoder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def fixture(name: str) -> Any:
    """A fixture file's content (``.xz`` is added when only the compressed file exists)."""
    path = FIXTURES / name
    if not path.exists():
        path = FIXTURES / f"{name}.xz"
    if path.name.endswith((".json", ".json.xz")):
        import lzma

        data = path.read_bytes()
        return json.loads(lzma.decompress(data) if path.suffix == ".xz" else data)
    return read_weights_file(path)


@cache
def vqvae():
    """The tiny VQVAE, loaded once: it is frozen, and policies copy its quantiser."""
    return alignkit.load_tokenizer("var-vqvae", checkpoint=VAE_TINY, config=VAE_CONFIG)


def tiny(checkpoint: Path | None = VAR_TINY, config: dict | None = None, tokenizer: Any = None):
    """``var_tiny`` (or another checkpoint) with its VQVAE, in eval mode."""
    model = alignkit.load_policy("var", checkpoint=checkpoint, config=config or TINY,
                                 tokenizer=tokenizer if tokenizer is not None else vqvae())
    return model.eval()


def images() -> Tensor:
    """``vae_io.img_u8_B3HW`` in [-1, 1], converted exactly as torchvision ToTensor + ``x + x − 1``."""
    t = fixture("vae_io.pt")["img_u8_B3HW"].to(torch.float32).div(255)
    return t.add(t).add_(-1)


def max_error(a: Tensor | list[Tensor], b: Tensor | list[Tensor]) -> float:
    if isinstance(a, Tensor):
        a, b = [a], [b]
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))
