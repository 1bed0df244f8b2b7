"""The feature-extractor interface and batched feature computation.

A feature extractor turns uint8 images into the arrays the metrics need. Plugins register them with
``alignkit_register_feature_extractors`` (``FeatureExtractorSpec(name, factory, Config, summary)``,
``factory(config) -> FeatureExtractor``); ``alignkit eval --features NAME`` selects one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from alignkit.errors import AlignkitError


class FeatureExtractor(ABC):
    """Images in, features out.

    **Input** of ``extract``: a batch of images as a numpy array ``(N, H, W, C)`` uint8 in [0, 255]
    (the ADM sample format), C = 3 or 1. Each extractor owns its preprocessing and documents it:
    ``input_size`` is the ``(H, W)`` its network sees (``None`` when it takes the images as they are);
    e.g. the FID Inception resizes anything to 299×299 exactly as the TF graph does, while the small
    in-domain classifier refuses a resolution it was not trained on. ``check_images(shape)`` raises
    ``AlignkitError`` before any work when a batch of that shape cannot be used.

    **Output**: a dict of float arrays with N rows:

    - ``pool`` ``(N, feature_dim)``: features for FID and precision/recall (always);
    - ``spatial`` ``(N, spatial_dim)``: spatial features for sFID (when ``spatial_dim`` is set);
    - ``logits`` ``(N, num_classes)`` or ``probs`` (when ``num_classes`` is set): class scores for the
      Inception Score; the engine takes a float64 softmax of ``logits``.

    ``labels_are_classes`` says that class index i *is* dataset label i (an in-domain classifier), so
    the accuracy of conditional samples can be reported; ``missing_classes_reason`` says why an
    extractor that could give class scores does not (it is shown beside the missing IS).
    ``describe()`` goes into the results (weights file, checksum, …) so that a number can be traced to
    the network that produced it.
    """

    name: str = "extractor"
    feature_dim: int
    spatial_dim: int | None = None
    num_classes: int | None = None
    labels_are_classes: bool = False
    missing_classes_reason: str = ""
    input_size: tuple[int, int] | None = None
    device: torch.device = torch.device("cpu")

    def check_images(self, shape: tuple[int, ...]) -> None:
        """Raise ``AlignkitError`` if images of ``shape`` ``(N, H, W, C)`` cannot be used."""

    @abstractmethod
    def extract(self, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one batch (see the class docstring)."""

    def to(self, device: str | torch.device) -> FeatureExtractor:
        """Move the network to ``device``; returns ``self``."""
        self.device = torch.device(device)
        return self

    def describe(self) -> dict[str, Any]:
        """What identifies this extractor in a results file."""
        return {"name": self.name}


def images_to_tensor(images_NHWC: np.ndarray, device: torch.device, channels: int | None = None) -> torch.Tensor:
    """uint8 NHWC numpy -> float32 NCHW in [0, 255] on ``device``; grey is repeated to ``channels`` = 3,
    and RGB averaged when ``channels`` = 1."""
    x = torch.from_numpy(np.array(images_NHWC)).to(device)  # a copy: batches of a read-only memory map
    x = x.permute(0, 3, 1, 2).to(torch.float32)
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise AlignkitError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
    return x


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not enabled, transient=True)


def compute_features(extractor: FeatureExtractor, images_NHWC: np.ndarray, batch_size: int = 64,
                     progress: bool = True, description: str = "features") -> dict[str, np.ndarray]:
    """``extractor.extract`` over ``images_NHWC`` in batches (read lazily, so memory maps stay cheap).

    Returns the concatenated float32 arrays; ``logits`` are kept as logits. A rich progress bar on
    stderr shows images done and the time left unless ``progress=False``.
    """
    if batch_size < 1:
        raise AlignkitError(f"batch size must be positive, got {batch_size}")
    extractor.check_images(tuple(images_NHWC.shape))
    n = images_NHWC.shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    with _progress(progress) as bar, torch.inference_mode():
        task = bar.add_task(f"{extractor.name} {description}", total=n)
        for start in range(0, n, batch_size):
            batch = np.ascontiguousarray(images_NHWC[start:start + batch_size])
            out = extractor.extract(batch)
            _check_output(extractor, out, len(batch))
            for key, value in out.items():
                parts.setdefault(key, []).append(np.asarray(value, np.float32))
            bar.advance(task, len(batch))
    return {key: np.concatenate(values) for key, values in parts.items()}


def _check_output(extractor: FeatureExtractor, out: dict[str, np.ndarray], n: int) -> None:
    """A plugin bug (wrong keys or shapes) is a programming error with a traceback, not a user error."""
    expected = {"pool": extractor.feature_dim}
    if extractor.spatial_dim is not None:
        expected["spatial"] = extractor.spatial_dim
    if extractor.num_classes is not None:
        key = "probs" if "probs" in out else "logits"
        expected[key] = extractor.num_classes
    for key, dim in expected.items():
        if key not in out:
            raise RuntimeError(f"feature extractor '{extractor.name}' returned no '{key}' (keys: {', '.join(out)})")
        if tuple(np.shape(out[key])) != (n, dim):
            raise RuntimeError(f"feature extractor '{extractor.name}': '{key}' has shape {tuple(np.shape(out[key]))}, "
                               f"expected {(n, dim)}")
