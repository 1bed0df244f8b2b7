"""Batched feature computation over sample and reference images (``alignkit.interfaces.features``)."""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from alignkit.errors import AlignkitError
from alignkit import FeatureExtractor


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
