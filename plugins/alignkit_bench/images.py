"""Labelled image sets for the bench: the embedded MNIST subset, a class-per-subfolder image folder,
or an ``.npz`` with ``images`` and ``labels``; a seeded, class-stratified train / validation / test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torch import Tensor

from alignkit import ComponentConfig
from alignkit.errors import AlignkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageSet:
    """uint8 images (N, H, W) for grey or (N, H, W, 3) for colour, int64 labels, class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else 3

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes, self.name)


def embedded_mnist() -> Path:
    import alignkit

    return Path(alignkit.__file__).parent / "assets" / "mnist5k.npz"


def load_images(source: str | Path, image_size: int | None = None) -> ImageSet:
    """``"mnist"`` (the 5,000 digits shipped with alignkit), a folder, or an ``.npz``."""
    if str(source) == "mnist":
        with np.load(embedded_mnist()) as data:
            return ImageSet(data["images"], data["labels"].astype(np.int64), [str(i) for i in range(10)], "mnist")
    path = Path(source)
    if path.is_dir():
        return _load_folder(path, image_size)
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    raise AlignkitError(f"data: {path} is neither 'mnist', a folder with one subfolder per class, nor an .npz file")


def _load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path) as data:
            missing = {"images", "labels"} - set(data.files)
            if missing:
                raise AlignkitError(f"data: {path} lacks {', '.join(sorted(missing))} (it holds {', '.join(data.files)})")
            images, labels = data["images"], data["labels"]
            classes = [str(c) for c in data["classes"]] if "classes" in data.files else None
    except (OSError, ValueError) as exc:
        raise AlignkitError(f"data: {path} is not a readable .npz file: {exc}") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise AlignkitError(f"data: {path}: 'images' must be uint8 (N, H, W) or (N, H, W, 3), got "
                            f"{images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.min() < 0:
        raise AlignkitError(f"data: {path}: 'labels' must be (N,) non-negative integers, got {labels.shape}")
    labels = labels.astype(np.int64)
    classes = classes or [str(i) for i in range(int(labels.max()) + 1)]
    return ImageSet(images, labels, classes, path.name)


def _load_folder(path: Path, image_size: int | None) -> ImageSet:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise AlignkitError(f"data: {path} has no class subfolders (expected one subfolder of images per class)")
    size = image_size or 32
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(file) as image:
                    images.append(np.asarray(_square(image.convert("RGB"), size)))
                labels.append(label)
    if not images:
        raise AlignkitError(f"data: {path}: no images found in its class subfolders")
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int64), classes, path.name)


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre square crop, then a bicubic resize to ``size``."""
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


class SplitConfig(ComponentConfig):
    """Where an image set's three splits come from: a seeded, class-stratified partition."""

    split_seed: int = Field(0, description="seed of the train / validation / test partition (alignkit bench "
                            "--split-seed); the same seed gives the same split everywhere")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="share of every class in the validation split")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of every class in the test split")


SPLITS = ("train", "validation", "test", "all")


def _stratified(data: ImageSet, shares: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of consecutive parts of a seeded per-class permutation: ``round(share · n)`` of every
    class for each share, the rest in a last part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(shares) + 1)]
    for label in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        cuts = np.cumsum([int(round(share * len(members))) for share in shares])
        for part, indices in zip(parts, np.split(members, cuts)):
            part.append(indices)
    return [np.sort(np.concatenate(part)) for part in parts]


def split(data: ImageSet, part: str, validation_fraction: float = 0.1, test_fraction: float = 0.2,
          seed: int = 0) -> ImageSet:
    """One part of a seeded partition that keeps every class's share: ``test`` and ``validation``
    take ``round(fraction · n)`` images of every class, ``train`` the rest; ``all`` is all."""
    if part not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {part!r}")
    if part == "all":
        return data
    test, validation, train = _stratified(data, (test_fraction, validation_fraction), seed)
    return data.subset({"test": test, "validation": validation, "train": train}[part])


def halves(data: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    """Two disjoint class-stratified halves (the test split's reference and real-vs-real floor sets)."""
    first, second = _stratified(data, (0.5,), seed)
    return data.subset(first), data.subset(second)


def subsample(data: ImageSet, count: int, seed: int) -> ImageSet:
    """``count`` images keeping every class's share (all of them when there are fewer)."""
    if count >= len(data.labels):
        return data
    return data.subset(_stratified(data, (count / len(data.labels),), seed)[0])


def to_model_range(images: np.ndarray, image_size: int, channels: int) -> Tensor:
    """uint8 (N, H, W[, 3]) -> float (N, C, S, S) in [-1, 1], resized (bilinear, antialiased) to S."""
    x = torch.from_numpy(images).float().div(127.5).sub(1)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if channels == 1 and x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    elif channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                                            align_corners=False)
    return x.clamp(-1, 1)
