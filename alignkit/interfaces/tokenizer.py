"""Image tokenizers: images to the token ids a backbone models, and back."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from alignkit.interfaces.component import ComponentSpec


class Tokenizer(nn.Module, ABC):
    """Images in [-1, 1] (B, C, H, W) to token ids (B, L) and back; ``channels`` is C (3 or 1)."""

    vocab_size: int
    seq_len: int
    image_size: int
    channels: int = 3

    @property
    def device(self) -> torch.device:
        """Where its weights are (the CPU for a tokenizer without any)."""
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @abstractmethod
    def encode(self, images_B3HW: Tensor) -> Tensor:
        """``tokens_BL`` int64, in the backbone's token order."""

    @abstractmethod
    def decode(self, tokens_BL: Tensor) -> Tensor:
        """Images (B, C, H, W), roughly in [-1, 1]."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights that its factory's ``checkpoint=path`` rebuilds it from. Optional; a
        tokenizer that can be built without a checkpoint (fitted on the data) should have it, so
        that training runs record the tokenizer they used."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its weights")


@dataclass(frozen=True)
class TokenizerSpec(ComponentSpec):
    """``factory(config, *, checkpoint: Path | None) -> Tokenizer``.

    ``needs_checkpoint``: whether its codes only mean something with trained weights (a randomly
    initialised VQ gives meaningless codes); ``False`` for tokenizers without weights or fitted on data.
    """

    needs_checkpoint: bool = True


    kind: ClassVar[str] = "tokenizer"
    builds: ClassVar[type] = Tokenizer
