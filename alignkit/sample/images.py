"""Decoded images to what evaluators read: uint8 NHWC arrays, and a PNG grid to look at.

The uint8 conversion is the official LlamaGen sampler's (``sample_c2i_ddp.py``)::

    torch.clamp(127.5 * x + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)

i.e. x in [-1, 1] is mapped to [0.5, 255.5], clamped, and **truncated** to an integer; the + 128
(not 127.5) makes that truncation round ``127.5 · (x + 1)`` half up. Published LlamaGen/CCA FID
numbers were computed on images converted this way, so every backbone's samples are.
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


def to_uint8_nhwc(images_B3HW: Tensor, image_size: int | None = None) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 on the CPU from decoded images in about [-1, 1].

    ``image_size`` resizes first, bicubic, as LlamaGen's ``--image-size-eval`` does (its 384-pixel
    models are evaluated at 256); ``None`` keeps the decoder's size.
    """
    images_B3HW = images_B3HW.float()
    if image_size is not None and tuple(images_B3HW.shape[-2:]) != (image_size, image_size):
        images_B3HW = F.interpolate(images_B3HW, size=(image_size, image_size), mode="bicubic")
    return torch.clamp(127.5 * images_B3HW + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()


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
