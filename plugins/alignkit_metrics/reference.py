"""Reference batches (e.g. ADM's ``VIRTUAL_imagenet256_labeled.npz``): images in ``arr_0`` and/or
precomputed statistics ``mu`` ``(D,)``, ``sigma`` ``(D, D)`` of the pool features and ``mu_s``,
``sigma_s`` of the spatial features; stored statistics are used as they are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.sample.npz import check_images
from alignkit_metrics.samples import SampleBatch, load_array, open_npz


@dataclass(frozen=True)
class Reference:
    """A reference batch: images (for precision/recall and statistics) and/or stored statistics."""

    images: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    path: Path | None = None


def _check_stats(mu: np.ndarray, sigma: np.ndarray, names: tuple[str, str],
                 where: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise AlignkitError(f"{where}: '{names[0]}' {mu.shape} and '{names[1]}' {sigma.shape} do not fit: expected "
                            "(D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise AlignkitError(f"{where}: '{names[0]}'/'{names[1]}' contain NaN or inf")
    return mu, sigma


def read_reference(path: str | os.PathLike) -> Reference:
    """Read and check a reference batch: images in ``arr_0`` and/or statistics ``mu``/``sigma``
    (and ``mu_s``/``sigma_s``)."""
    path, keys = open_npz(path, "reference")
    where = f"reference {path}"
    if "arr_0" not in keys and "mu" not in keys:
        raise AlignkitError(f"{where}: no 'arr_0' images and no 'mu'/'sigma' statistics (keys: "
                            f"{', '.join(keys) or 'none'}); a reference batch needs one of them")
    images = check_images(load_array(path, "arr_0", "reference", mmap=True), where) if "arr_0" in keys else None
    stats: dict[str, np.ndarray | None] = {}
    for pair in (("mu", "sigma"), ("mu_s", "sigma_s")):
        present = [k for k in pair if k in keys]
        if len(present) == 1:
            missing = next(k for k in pair if k not in keys)
            raise AlignkitError(f"{where}: has '{present[0]}' but no '{missing}'")
        if present:
            stats[pair[0]], stats[pair[1]] = _check_stats(load_array(path, pair[0], "reference"),
                                                          load_array(path, pair[1], "reference"), pair, where)
    return Reference(images, stats.get("mu"), stats.get("sigma"), stats.get("mu_s"), stats.get("sigma_s"), path)


def check_compatible(samples: SampleBatch, reference: Reference) -> None:
    """Samples and reference images must have one resolution and channel count (ADM compares like with like)."""
    if reference.images is None:
        return
    (h, w, c), (rh, rw, rc) = samples.images.shape[1:], reference.images.shape[1:]
    if (h, w) != (rh, rw):
        raise AlignkitError(f"the reference {reference.path} has {rh}×{rw} images but the samples {samples.path} are "
                            f"{h}×{w}; resize the samples to {rh}×{rw} first (e.g. LlamaGen's 384-pixel models are "
                            "evaluated after resizing to 256)")
    if c != rc:
        raise AlignkitError(f"the reference {reference.path} has {rc}-channel images but the samples {samples.path} "
                            f"have {c} channel(s)")


