"""Feature extractors: images in, the arrays FID, IS, precision and recall need out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from alignkit.interfaces.component import ComponentSpec


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


@dataclass(frozen=True)
class FeatureExtractorSpec(ComponentSpec):
    """``factory(config) -> FeatureExtractor``; ``alignkit eval --features NAME`` selects one."""

    kind: ClassVar[str] = "feature_extractor"
    builds: ClassVar[type] = FeatureExtractor
