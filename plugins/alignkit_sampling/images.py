"""Decoded images to what evaluators read: uint8 NHWC arrays, and a PNG grid to look at.

Each backbone declares its official sampler's conversion (``PolicyModel.uint8_conversion``), since
published FIDs were computed on images converted that way:

- ``"round"``, LlamaGen's ``sample_c2i_ddp.py``: ``torch.clamp(127.5 * x + 128.0, 0, 255).to(uint8)``;
  the + 128 makes the truncation round ``127.5 · (x + 1)`` half up;
- ``"truncate"``, VAR's and CCA's ``VAR_sample.py``: ``((x.clamp(-1, 1) + 1) * 0.5).mul_(255)``, then
  ``.astype(np.uint8)``, which truncates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.files import atomic_write

GRID_COLUMNS = 8
GRID_MAX_ROWS = 16
GRID_PADDING = 2


UINT8 = {"round": "clamp(127.5 * x + 128, 0, 255) truncated to uint8 (official LlamaGen sampler: rounds half up)",
         "truncate": "255 * (clamp(x, -1, 1) + 1) / 2 truncated to uint8 (official VAR / CCA VAR_sample.py)"}


def to_uint8_nhwc(images_B3HW: Tensor, image_size: int | None = None, conversion: str = "round") -> np.ndarray:
    """``(B, H, W, 3)`` uint8 on the CPU from decoded images in about [-1, 1], by ``conversion`` (``UINT8``).

    ``image_size`` resizes first, bicubic, as LlamaGen's ``--image-size-eval`` does (its 384-pixel
    models are evaluated at 256); ``None`` keeps the decoder's size.
    """
    x = images_B3HW.float()
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic")
    x = x.clamp(-1, 1).add(1).mul(0.5).mul(255) if conversion == "truncate" else torch.clamp(127.5 * x + 128.0, 0, 255)
    return x.permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()


def grid_classes(classes: Sequence[int], max_rows: int = GRID_MAX_ROWS) -> list[int]:
    """The classes the grid shows: all of them up to ``max_rows``, else ``max_rows`` spread evenly
    (the first and the last included), so that an ImageNet grid stays a few megabytes."""
    if len(classes) <= max_rows:
        return list(classes)
    picks = np.linspace(0, len(classes) - 1, max_rows).round().astype(int)
    return [classes[i] for i in picks]


def write_grid(images_NHWC: np.ndarray, labels_N: np.ndarray, rows: Sequence[int], path: str | Path,
               columns: int = GRID_COLUMNS, padding: int = GRID_PADDING) -> Path:
    """A PNG with one row per class in ``rows``: that class's first ``columns`` images, in order,
    on a white background with ``padding`` pixels between tiles. Written atomically."""
    from PIL import Image

    h, w, c = images_NHWC.shape[1:]
    canvas = np.full((len(rows) * (h + padding) - padding, columns * (w + padding) - padding, c), 255, np.uint8)
    for r, label in enumerate(rows):
        for k, index in enumerate(np.flatnonzero(labels_N == label)[:columns]):
            top, left = r * (h + padding), k * (w + padding)
            canvas[top:top + h, left:left + w] = images_NHWC[index]
    image = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    path = Path(path)

    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path
