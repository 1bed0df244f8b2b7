"""Pair samplers: which condition each row is contrasted with, and which rows go to the null class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from alignkit.interfaces.component import ComponentConfig, ComponentSpec


@dataclass(frozen=True)
class Pairs:
    """The conditions a PairSampler chose for one batch.

    ``labels_pos_B`` is the data label, ``labels_neg_B`` the mismatched label; rows in ``uncond_B``
    had both replaced by the null class (the CCA+CFG trick that keeps the unconditional model
    trained).
    """

    labels_pos_B: Tensor
    labels_neg_B: Tensor
    uncond_B: Tensor

    @property
    def neg_is_pos_B(self) -> Tensor:
        """Rows whose "negative" condition equals the positive one (null rows and label collisions)."""
        return self.uncond_B | (self.labels_neg_B == self.labels_pos_B)


class PairSampler(ABC):
    """Chooses negative conditions inside a batch and masks rows to the null class.

    ``negatives`` picks ``labels_neg_B``; ``__call__`` then replaces both labels of a Bernoulli
    (``uncond_ratio``) subset of rows by the null class, drawing from the sampler's own seeded
    generator, exactly in the order of the official code (negatives first, then the mask).
    """

    def __init__(self, config: ComponentConfig, *, null_label: int, uncond_ratio: float, generator: torch.Generator):
        self.config = config
        self.null_label = null_label
        self.uncond_ratio = uncond_ratio
        self.generator = generator

    @abstractmethod
    def negatives(self, labels_B: Tensor) -> Tensor:
        """``labels_neg_B`` for CPU int64 ``labels_B``."""

    def __call__(self, labels_B: Tensor) -> Pairs:
        device = labels_B.device
        labels_B = labels_B.detach().to("cpu", torch.int64)
        labels_neg_B = self.negatives(labels_B)
        if self.uncond_ratio > 0:
            uncond_B = torch.rand(labels_B.shape[0], generator=self.generator) < self.uncond_ratio
        else:
            uncond_B = torch.zeros(labels_B.shape[0], dtype=torch.bool)
        null_B = torch.full_like(labels_B, self.null_label)
        return Pairs(
            labels_pos_B=torch.where(uncond_B, null_B, labels_B).to(device),
            labels_neg_B=torch.where(uncond_B, null_B, labels_neg_B).to(device),
            uncond_B=uncond_B.to(device),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@dataclass(frozen=True)
class PairSamplerSpec(ComponentSpec):
    """``factory(config, *, null_label: int, uncond_ratio: float, generator: torch.Generator) -> PairSampler``.

    ``generator`` is seeded by the engine (``sampler.seed`` + the process rank); every random draw
    of the sampler must come from it, so that a resumed run draws what the uninterrupted one did.
    """

    kind: ClassVar[str] = "pair_sampler"
    builds: ClassVar[type] = PairSampler
