"""ADM-format ``.npz`` sample batches, written with their checks (evaluation reads them:
``alignkit_metrics.batches``).

A **sample batch** holds ``arr_0``: ``(N, H, W, C)`` uint8 images in [0, 255] (C = 3, or 1 for
grey; an ``(N, H, W)`` array is read as grey), and optionally ``labels`` ``(N,)`` and ``tokens``
``(N, L)`` integers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from alignkit.files import write_npz
from alignkit.errors import AlignkitError

EXPECTED = "uint8 images in [0, 255], NHWC (N, H, W, C) with C = 3 (or 1)"


def check_images(images: np.ndarray, where: str) -> np.ndarray:
    """``images`` as ``(N, H, W, C)`` uint8 with C in {1, 3}, or an ``AlignkitError`` naming what was found."""
    if images.dtype != np.uint8:
        hint = ""
        if np.issubdtype(images.dtype, np.floating):
            hint = " (from floats in [0, 1]: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))"
        elif np.issubdtype(images.dtype, np.integer):
            hint = " (clip to [0, 255] and cast with .astype(np.uint8))"
        raise AlignkitError(f"{where}: arr_0 has dtype {images.dtype}; expected {EXPECTED}{hint}")
    if images.ndim == 3 and images.shape[-1] not in (1, 3):
        images = images[..., None]  # (N, H, W) grey
    if images.ndim != 4:
        hint = " (a single image? add a batch axis: images[None])" if images.ndim == 3 else ""
        raise AlignkitError(f"{where}: arr_0 has shape {images.shape}; expected {EXPECTED}{hint}")
    if images.shape[-1] not in (1, 3):
        hint = (" (this looks like NCHW: use images.transpose(0, 2, 3, 1))" if images.shape[1] in (1, 3)
                else "")
        raise AlignkitError(f"{where}: arr_0 has shape {images.shape} with {images.shape[-1]} channels; "
                            f"expected {EXPECTED}{hint}")
    if images.shape[0] == 0:
        raise AlignkitError(f"{where}: arr_0 holds no images")
    if min(images.shape[1:3]) < 1:
        raise AlignkitError(f"{where}: arr_0 has empty images, shape {images.shape}")
    return images


def check_vector(values: np.ndarray, n: int, key: str, where: str, ndim: int) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer) or values.ndim != ndim or values.shape[0] != n:
        want = "(N,)" if ndim == 1 else "(N, L)"
        raise AlignkitError(f"{where}: '{key}' has shape {values.shape} and dtype {values.dtype}; expected "
                            f"{want} integers with N = {n}, one per image")
    return values


def write_samples(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None,
                  tokens: np.ndarray | None = None) -> Path:
    """Write an ADM-format sample batch (``np.savez``, uncompressed) atomically; returns the path."""
    path = Path(path)
    images = check_images(np.asarray(images), f"samples {path}")
    arrays = {"arr_0": np.ascontiguousarray(images)}
    if labels is not None:
        arrays["labels"] = check_vector(np.asarray(labels), len(images), "labels", f"samples {path}", 1)
    if tokens is not None:
        arrays["tokens"] = check_vector(np.asarray(tokens), len(images), "tokens", f"samples {path}", 2)
    write_npz(path, **arrays)
    return path
