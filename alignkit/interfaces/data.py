"""Token datasets: what training reads. Images are tokenized beforehand (``alignkit extract``).

A dataset item is addressed by ``(index, augmentation)``: the trainer chooses both from its seeded
data order (``alignkit.engine.data_order``), so data order and augmentation choice are reproducible
and resumable, also across DataLoader workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from alignkit.errors import AlignkitError
from alignkit.interfaces.component import ComponentSpec


class TokenDataset(Dataset, ABC):
    """Pre-tokenized images: ``get(index, augmentation) -> (tokens_L int64, label int)``.

    ``num_augmentations`` is the number of stored variants per image (10 for the official ten-crop
    × flip codes, 1 without augmentation).
    """

    num_augmentations: int = 1

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def get(self, index: int, augmentation: int) -> tuple[Tensor, int]: ...

    @property
    @abstractmethod
    def seq_len(self) -> int: ...

    def describe(self) -> str:
        """Where the data comes from, for error messages."""
        return type(self).__name__

    def all_labels(self) -> Tensor | None:
        """Every label, when that is cheap (in-memory data), so that a bad label is reported before
        training starts; ``None`` makes the trainer check batch by batch instead."""
        return None

    def token_range(self) -> tuple[int, int] | None:
        """The smallest and largest token id, when that is cheap (in-memory data), as ``all_labels``."""
        return None

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, augmentation = key
        return self.get(index, augmentation)


def collate(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """``(tokens_BL int64, labels_B int64)``; float token ids are refused, never truncated."""
    if any(torch.as_tensor(t).is_floating_point() for t, _ in items):
        raise AlignkitError("data: the dataset returned float token ids; token ids must be integers")
    tokens_BL = torch.stack([torch.as_tensor(t, dtype=torch.int64) for t, _ in items])
    labels_B = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
    return tokens_BL, labels_B


@dataclass(frozen=True)
class DatasetSpec(ComponentSpec):
    """``factory(config, *, tokenizer: Tokenizer | None) -> TokenDataset``; ``tokenizer`` is the
    recipe's ``[tokenizer]``, for datasets that tokenize images themselves."""

    kind: ClassVar[str] = "dataset"
    builds: ClassVar[type] = TokenDataset
