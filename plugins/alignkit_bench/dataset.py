"""The ``images`` dataset: labelled images, tokenized once by the recipe's tokenizer and cached."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from alignkit import TokenDataset, Tokenizer
from alignkit.errors import AlignkitError
from alignkit.recipe import InputPath
from alignkit_bench.cache import cache_dir, fingerprint
from alignkit_bench.images import ImageSet, SplitConfig, load_images, split, subsample, to_model_range


class ImagesConfig(SplitConfig):
    source: Literal["mnist"] | InputPath = Field("mnist", description="'mnist' (5,000 digits shipped with alignkit), "
                                                 "a folder with one subfolder per class, or an .npz with images and labels")
    split: Literal["train", "validation", "test", "all"] = "train"
    max_images: int | None = Field(None, ge=1, description="use at most this many images of the split "
                                   "(every class keeps its share)")


def encode_all(tokenizer: Tokenizer, images: np.ndarray, batch_size: int = 256) -> Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_model_range(images[start: start + batch_size], tokenizer.image_size, tokenizer.channels)
            out.append(tokenizer.encode(x).cpu())
    return torch.cat(out).to(torch.int64)


class ImageDataset(TokenDataset):
    def __init__(self, config: ImagesConfig, tokenizer: Tokenizer | None = None):
        if tokenizer is None:
            raise AlignkitError("data: the 'images' dataset tokenizes its images: the recipe needs a [tokenizer] "
                                "section")
        self.source = str(config.source)
        data: ImageSet = split(load_images(config.source, tokenizer.image_size), config.split,
                               config.validation_fraction, config.test_fraction, config.split_seed)
        if config.max_images is not None:
            data = subsample(data, config.max_images, config.split_seed + 1)
        self.classes = data.classes
        key = fingerprint(data.images, data.labels, type(tokenizer).__name__, tokenizer.image_size,
                          *tokenizer.state_dict().values())[:16]
        path = cache_dir("tokens") / f"{key}.pt"
        if path.is_file():
            self.tokens = torch.load(path, weights_only=True)
        else:
            self.tokens = encode_all(tokenizer, data.images)
            torch.save(self.tokens, path)
        self.labels = torch.from_numpy(data.labels)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def describe(self) -> str:
        return f"images from {self.source}"

    def get(self, index: int, augmentation: int) -> tuple[Tensor, int]:
        return self.tokens[index], int(self.labels[index])

    def all_labels(self) -> Tensor:
        return self.labels
