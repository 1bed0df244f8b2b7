"""Datasets of pre-extracted token ids.

The official layout (LlamaGen ``extract_codes_c2i.py``, used by the CCA scripts) is one file per
image: ``<codes>/<k>.npy`` int64 of shape (1, A, L) (A augmentations: 10 for ten-crop × flip, 2 for
original + flip) and ``<labels>/<k>.npy`` of shape (1,), for every k in 0..N-1. Several code folders
(the official ``ten_crop`` and ``ten_crop_105`` extractions) may be given; each item then picks one
folder and one variant, uniformly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from alignkit import AlignkitError, ComponentConfig
from alignkit import TokenDataset
from alignkit.recipe import InputPath


class CodeFolderConfig(ComponentConfig):
    codes: list[InputPath] = Field(min_length=1, description="folder(s) of <k>.npy code arrays (1, A, L)")
    labels: InputPath = Field(description="folder of <k>.npy labels (1,)")


class CodeFolder(TokenDataset):
    def __init__(self, config: CodeFolderConfig, tokenizer: object = None):
        self.code_dirs = [Path(p) for p in config.codes]
        self.label_dir = Path(config.labels)
        for folder in (*self.code_dirs, self.label_dir):
            if not folder.is_dir():
                raise AlignkitError(f"data: {folder} is not a folder")
        self.size = _count_npy(self.label_dir)
        if self.size == 0:
            raise AlignkitError(f"data.labels: {self.label_dir} holds no .npy files")
        for folder in self.code_dirs:
            if (found := _count_npy(folder)) != self.size:
                raise AlignkitError(f"data.codes: {folder} holds {found} .npy files, data.labels {self.label_dir} "
                                    f"holds {self.size}: they must match one to one")
        first = self._load(self.code_dirs[0], 0)
        self.variants = first.shape[0]
        self._seq_len = first.shape[1]
        self.num_augmentations = self.variants * len(self.code_dirs)

    def _load(self, folder: Path, index: int) -> np.ndarray:
        path = folder / f"{index}.npy"
        try:
            array = np.load(path)
        except FileNotFoundError:
            raise AlignkitError(f"data: {path} is missing (the layout needs every index 0..{self.size - 1})") from None
        except (ValueError, OSError, EOFError) as exc:
            raise AlignkitError(f"data: {path} is not a valid .npy file: {exc}") from None
        if not np.issubdtype(array.dtype, np.integer) or array.ndim == 0:
            raise AlignkitError(f"data: {path} holds {array.dtype} {array.shape}; token ids and labels must be "
                                "integer arrays (floats are refused, not truncated)")
        return array.reshape(-1, array.shape[-1])

    def __len__(self) -> int:
        return self.size

    @property
    def seq_len(self) -> int:
        return self._seq_len

    def describe(self) -> str:
        return f"code folder {self.code_dirs[0]}"

    def get(self, index: int, augmentation: int) -> tuple[Tensor, int]:
        folder = self.code_dirs[augmentation // self.variants]
        codes = self._load(folder, index)
        label = int(self._load(self.label_dir, index).reshape(-1)[0])
        return torch.from_numpy(codes[augmentation % self.variants].astype(np.int64)), label


class CodeNpzConfig(ComponentConfig):
    path: InputPath = Field(description=".npz with 'tokens' (N, L) or (N, A, L) and 'labels' (N,)")


class CodeNpz(TokenDataset):
    def __init__(self, config: CodeNpzConfig, tokenizer: object = None):
        self.path = Path(config.path)
        try:
            with np.load(self.path) as data:
                missing = {"tokens", "labels"} - set(data.files)
                if missing:
                    raise AlignkitError(f"data.path: {self.path} lacks {', '.join(sorted(missing))} "
                                        f"(it holds {', '.join(data.files) or 'nothing'})")
                tokens, labels = data["tokens"], data["labels"]
        except (OSError, ValueError) as exc:
            raise AlignkitError(f"data.path: {self.path} is not a readable .npz file: {exc}") from None
        for key, array in (("tokens", tokens), ("labels", labels)):
            if not np.issubdtype(array.dtype, np.integer):
                raise AlignkitError(f"data.path: {self.path}: '{key}' has dtype {array.dtype}; token ids and labels "
                                    "must be integers (floats are refused, not truncated)")
        if len(labels) == 0:
            raise AlignkitError(f"data.path: {self.path} holds no items ('labels' has shape {labels.shape})")
        if tokens.ndim == 2:
            tokens = tokens[:, None]
        if tokens.ndim != 3 or labels.shape != tokens.shape[:1]:
            raise AlignkitError(f"data.path: {self.path}: tokens {tokens.shape} and labels {labels.shape} do not "
                                "fit (expected (N, L) or (N, A, L) and (N,))")
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.num_augmentations = self.tokens.shape[1]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[2]

    def describe(self) -> str:
        return str(self.path)

    def get(self, index: int, augmentation: int) -> tuple[Tensor, int]:
        return self.tokens[index, augmentation], int(self.labels[index])

    def all_labels(self) -> Tensor:
        return self.labels

    def token_range(self) -> tuple[int, int]:
        return int(self.tokens.min()), int(self.tokens.max())


def _count_npy(folder: Path) -> int:
    return sum(1 for entry in os.scandir(folder) if entry.name.endswith(".npy"))
