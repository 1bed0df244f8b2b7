"""A small in-domain CNN classifier as a feature extractor, for data where Inception features mean nothing.

For small images (MNIST-like digits at 28×28, CIFAR-like 32×32, grey or RGB): FID, precision/recall
on its pooled penultimate features, IS on its class probabilities, and the accuracy of conditional
samples (its classes are the dataset's labels). Numbers are comparable only between runs that use
the same weights file; ``describe()`` records its checksum.

Train one on the real training split, then evaluate with it::

    from alignkit_metrics.classifier import train_classifier
    train_classifier(train_images_NHWC_uint8, train_labels, out="digits-clf.safetensors")
    # alignkit eval --samples s.npz --ref real.npz --features classifier --weights digits-clf.safetensors

The weights file is safetensors; its metadata carries ``num_classes``, ``image_size``, ``channels`` and
``widths``, so ``--weights`` is all ``eval`` needs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from alignkit import AlignkitError, ComponentConfig
from alignkit.checkpoints import load_strict, read_weights_file, save_safetensors, unwrap_state_dict
from alignkit_metrics.features import FeatureExtractor, images_to_tensor
from alignkit.sample.npz import check_images
from alignkit_metrics.weights import sha256

METADATA_KEY = "alignkit_classifier"


class ClassifierConfig(ComponentConfig):
    weights: Path | None = Field(None, description="safetensors file written by train_classifier")
    num_classes: int | None = Field(None, ge=2, description="default: from the weights file's metadata")
    image_size: int | None = Field(None, ge=4, description="side of the square images it was trained on")
    channels: int | None = Field(None, ge=1, le=3, description="1 (grey) or 3 (RGB)")
    widths: tuple[int, int, int] | None = Field(None, description="channels of the three stages, default (32, 64, 128)")


class SmallCNN(nn.Module):
    """conv-pool, conv-pool, conv (3×3, batch norm, ReLU), global average pool -> ``features``
    (``widths[2]``-d), linear -> ``logits``. Input: float ``(N, C, H, W)`` in [0, 255]. About 7.5M
    multiply-adds per 28×28 image with the default widths."""

    def __init__(self, channels: int, num_classes: int, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        w1, w2, w3 = widths

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(channels, w1), nn.MaxPool2d(2), block(w1, w2), nn.MaxPool2d(2),
                                  block(w2, w3))
        self.head = nn.Linear(w3, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x * (2 / 255) - 1).mean(dim=(2, 3))
        return features, self.head(features)


class ClassifierExtractor(FeatureExtractor):
    """``pool``: the classifier's pooled penultimate features; ``logits``: its class scores.

    Images must have the resolution it was trained on (no resizing: an in-domain network); grey and
    RGB are converted to its channel count.
    """

    name = "classifier"
    labels_are_classes = True

    def __init__(self, net: SmallCNN, image_size: int, channels: int, info: dict[str, Any] | None = None):
        self.net = net.eval()
        self.feature_dim = net.head.in_features
        self.num_classes = net.head.out_features
        self.channels = channels
        self.input_size = (image_size, image_size)
        self.info = info or {}

    def check_images(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or tuple(shape[1:3]) != self.input_size or shape[-1] not in (1, 3):
            raise AlignkitError(f"the classifier extractor was trained on {self.input_size[0]}×{self.input_size[1]} "
                                f"images with {self.channels} channel(s); got images of shape {shape} (N, H, W, C)")

    def to(self, device: str | torch.device) -> ClassifierExtractor:
        super().to(device)
        self.net.to(self.device)
        return self

    def extract(self, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            features, logits = self.net(images_to_tensor(images_NHWC, self.device, channels=self.channels))
        return {"pool": features.float().cpu().numpy(), "logits": logits.float().cpu().numpy()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "image_size": self.input_size[0],
                "channels": self.channels, **self.info}


def build_classifier(config: ClassifierConfig) -> ClassifierExtractor:
    """The registered factory: a classifier from its safetensors file (settings from its metadata)."""
    if config.weights is None:
        raise AlignkitError("the classifier extractor needs its weights: --weights PATH to a file written by "
                            "alignkit_metrics.classifier.train_classifier")
    path = Path(config.weights).expanduser()
    settings: dict[str, Any] = {}
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                settings = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
        except Exception:  # unreadable: read_weights_file below reports it clearly
            settings = {}
    state = unwrap_state_dict(read_weights_file(path), path)
    for key in ("num_classes", "image_size", "channels", "widths"):
        if getattr(config, key) is not None:
            settings[key] = getattr(config, key)
    missing = [k for k in ("num_classes", "image_size", "channels") if k not in settings]
    if missing:
        raise AlignkitError(f"{path}: no classifier settings in the file's metadata; give {', '.join(missing)} "
                            "(e.g. --option num_classes=10)")
    net = SmallCNN(settings["channels"], settings["num_classes"], tuple(settings.get("widths", (32, 64, 128))))
    load_strict(net, state, path)
    info = {"weights": str(path), "sha256": sha256(path)}
    return ClassifierExtractor(net, settings["image_size"], settings["channels"], info)


def _shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge pixels repeated)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def train_classifier(images: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None, epochs: int = 3,
                     batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 5e-4,
                     widths: tuple[int, int, int] = (32, 64, 128), max_shift: int = 2, seed: int = 0,
                     val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
                     out: str | Path | None = None, device: str = "cpu", num_threads: int | None = 1
                     ) -> ClassifierExtractor:
    """Fit ``SmallCNN`` on uint8 NHWC ``images`` and integer ``labels``; save to ``out`` (safetensors) if given.

    AdamW with a one-cycle schedule, random shifts of up to ``max_shift`` pixels, deterministic for a
    ``seed``. Training on the CPU uses ``num_threads`` intra-op threads (1 by default: convolutions this
    small gain little from more, and lose badly when the cores are shared); 5k 28×28 digits take
    about 15 s. The returned extractor's ``info`` holds the training and (given ``val_*``) validation
    accuracy.
    """
    threads = torch.get_num_threads()
    if num_threads is not None and torch.device(device).type == "cpu":
        torch.set_num_threads(num_threads)
    try:
        return _train(images, labels, num_classes, epochs, batch_size, lr, weight_decay, widths, max_shift, seed,
                      val_images, val_labels, out, device)
    finally:
        torch.set_num_threads(threads)


def _train(images: np.ndarray, labels: np.ndarray, num_classes: int | None, epochs: int, batch_size: int, lr: float,
           weight_decay: float, widths: tuple[int, int, int], max_shift: int, seed: int, val_images: np.ndarray | None,
           val_labels: np.ndarray | None, out: str | Path | None, device: str) -> ClassifierExtractor:
    images = check_images(np.asarray(images), "classifier training images")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise AlignkitError(f"labels must be (N,) integers with N = {len(images)}, got {labels.shape} {labels.dtype}")
    if images.shape[1] != images.shape[2]:
        raise AlignkitError(f"the classifier takes square images, got {images.shape[1]}×{images.shape[2]}")
    num_classes = int(num_classes or labels.max() + 1)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise AlignkitError(f"labels must lie in [0, {num_classes})")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    channels = images.shape[-1]
    net = SmallCNN(channels, num_classes, widths).to(device)
    x_all = images_to_tensor(images, torch.device("cpu"))
    y_all = torch.as_tensor(labels, dtype=torch.long)
    steps = epochs * math.ceil(len(images) / batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.2)
    start_time = time.perf_counter()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            x = x_all[idx]
            if max_shift > 0:
                x = _shift(x, max_shift, generator)
            _, logits = net(x.to(device))
            loss = F.cross_entropy(logits, y_all[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    _recalibrate_batch_norm(net, x_all, batch_size, device)
    extractor = ClassifierExtractor(net, images.shape[1], channels).to(device)
    info: dict[str, Any] = {"train_seconds": round(time.perf_counter() - start_time, 2),
                            "train_accuracy": accuracy(extractor, images, labels)}
    if val_images is not None and val_labels is not None:
        info["val_accuracy"] = accuracy(extractor, check_images(np.asarray(val_images), "validation images"),
                                        np.asarray(val_labels))
    if out is not None:
        settings = {"num_classes": num_classes, "image_size": images.shape[1], "channels": channels,
                    "widths": list(widths)}
        save_safetensors(net.state_dict(), out, metadata={METADATA_KEY: json.dumps(settings)})
        info.update(weights=str(out), sha256=sha256(Path(out)))
    extractor.info = info
    return extractor


def _recalibrate_batch_norm(net: SmallCNN, x_all: Tensor, batch_size: int, device: str,
                            max_images: int = 10_000) -> None:
    """Replace batch norm's running statistics by exact averages over (up to ``max_images``) training
    images: after a short run the exponential averages still remember their initial values."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for start in range(0, min(len(x_all), max_images), batch_size):
            net(x_all[start:start + batch_size].to(device))
    for m in norms:
        m.momentum = 0.1
    net.eval()


def accuracy(extractor: ClassifierExtractor, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Share of ``images`` whose most probable class is their label."""
    hits = 0
    for start in range(0, len(images), batch_size):
        logits = extractor.extract(np.ascontiguousarray(images[start:start + batch_size]))["logits"]
        hits += int((logits.argmax(axis=1) == np.asarray(labels[start:start + batch_size])).sum())
    return hits / len(images)
