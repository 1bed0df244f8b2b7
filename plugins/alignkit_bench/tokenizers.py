"""Toy tokenizers that let both backbones run on a CPU: pixel patches quantised by k-means.

``patch-vq`` (raster, for LlamaGen): an image of S×S pixels is cut into p×p patches in raster order
and each patch is replaced by its nearest codebook entry: L = (S/p)² tokens.

``patch-msvq`` (multi-scale, for VAR): the same patch vectors form a latent of (S/p)×(S/p) cells
with C·p² channels, quantised by VAR's own residual multi-scale quantiser (area down, bicubic up,
identity Phi) over ``patch_nums``: L = Σ pn² tokens. Its codebook is fitted scale by scale on the
residuals left by the coarser scales.

Codebooks are fitted on the training split of ``fit_source`` (seeded, deterministic) and cached in
``$ALIGNKIT_CACHE/tokenizers`` under a hash of the settings and the data, so every later use loads
them; ``checkpoint`` loads a saved codebook instead.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from alignkit import Tokenizer
from alignkit.checkpoints import read_weights_file, save_safetensors
from alignkit.errors import CheckpointError
from alignkit_bench.cache import cache_dir, fingerprint
from alignkit_bench.images import SplitConfig, load_images, split, to_model_range
from alignkit_bench.kmeans import kmeans, nearest
from alignkit_var.quant import MultiScaleQuantizer


MAX_FIT_POINTS = 100_000
"""Lloyd steps see at most this many vectors (sampled): plenty for a few hundred codes."""


class PatchVQConfig(SplitConfig):
    image_size: int = Field(28, ge=2, description="pixels per side")
    channels: Literal[1, 3] = Field(1, description="1: grey (colour inputs are averaged), 3: RGB")
    patch: int = Field(4, ge=1, description="pixels per side of one token")
    codebook_size: int = Field(256, ge=2)
    fit_source: str = Field("mnist", description="images the codebook is fitted on (their training split, as "
                            "split_seed and the fractions say)")
    fit_images: int = Field(4000, ge=1, description="at most this many images for fitting")
    iterations: int = Field(25, ge=1, description="Lloyd iterations")
    seed: int = 0

    @model_validator(mode="after")
    def _divides(self):
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}")
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def dim(self) -> int:
        return self.channels * self.patch ** 2


class PatchMSVQConfig(PatchVQConfig):
    patch_nums: tuple[int, ...] = Field((1, 2, 3, 5, 7), description="token-map sides per scale; the last is "
                                        "image_size / patch")

    @model_validator(mode="after")
    def _last_scale(self):
        if self.patch_nums[-1] != self.grid:
            raise ValueError(f"the last patch_num must be image_size / patch = {self.grid}, got {self.patch_nums[-1]}")
        return self


class PatchTokenizer(Tokenizer):
    """What both toy tokenizers share: patches in, patches out."""

    def __init__(self, config: PatchVQConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.vocab_size = config.codebook_size
        self.channels = config.channels

    def latent(self, images_BCHW: Tensor) -> Tensor:
        """Patch vectors as a (B, C·p², S/p, S/p) latent."""
        x = images_BCHW.float()
        if self.config.channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (self.image_size, self.image_size) or x.shape[1] != self.config.channels:
            raise ValueError(f"images are {tuple(x.shape[1:])}, this tokenizer takes "
                             f"({self.config.channels}, {self.image_size}, {self.image_size})")
        return F.pixel_unshuffle(x, self.config.patch)

    def images(self, latent_BDhw: Tensor) -> Tensor:
        """(B, 3, S, S) in [-1, 1] from a latent (grey is repeated over the three channels)."""
        x = F.pixel_shuffle(latent_BDhw, self.config.patch).clamp(-1, 1)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class PatchVQ(PatchTokenizer):
    def __init__(self, config: PatchVQConfig, codebook_KD: Tensor):
        super().__init__(config)
        self.seq_len = config.grid ** 2
        self.register_buffer("codebook", codebook_KD.float())

    @torch.no_grad()
    def encode(self, images_B3HW: Tensor) -> Tensor:
        latent = self.latent(images_B3HW.to(self.codebook.device))
        B, D = latent.shape[:2]
        return nearest(latent.flatten(2).transpose(1, 2).reshape(-1, D), self.codebook).view(B, -1)

    @torch.no_grad()
    def decode(self, tokens_BL: Tensor) -> Tensor:
        B, grid = tokens_BL.shape[0], self.config.grid
        vectors = self.codebook[tokens_BL.to(self.codebook.device)]  # (B, L, D)
        return self.images(vectors.transpose(1, 2).reshape(B, -1, grid, grid))

    def save(self, path: str | os.PathLike) -> None:
        save_safetensors({"codebook": self.codebook}, path)


class PatchMSVQ(PatchTokenizer):
    """Holds a VAR ``MultiScaleQuantizer`` as ``quantize``, which the VAR backbone takes over."""

    def __init__(self, config: PatchMSVQConfig, codebook_KD: Tensor):
        super().__init__(config)
        self.seq_len = sum(pn * pn for pn in config.patch_nums)
        self.quantize = MultiScaleQuantizer(config.codebook_size, config.dim, config.patch_nums, quant_resi=0.0,
                                            share_quant_resi=1)
        with torch.no_grad():
            self.quantize.embedding.weight.copy_(codebook_KD)
        self.requires_grad_(False)

    @torch.no_grad()
    def encode(self, images_B3HW: Tensor) -> Tensor:
        ids_per_scale, _ = self.quantize.quantize(self.latent(images_B3HW.to(self.quantize.device)))
        return torch.cat(ids_per_scale, dim=1)

    @torch.no_grad()
    def decode_fhat(self, f_hat_BDhw: Tensor) -> Tensor:
        return self.images(f_hat_BDhw.float())

    @torch.no_grad()
    def decode(self, tokens_BL: Tensor) -> Tensor:
        ids = self.quantize.split(tokens_BL.to(self.quantize.device))
        return self.decode_fhat(self.quantize.fhat_from_ids(ids))

    def save(self, path: str | os.PathLike) -> None:
        save_safetensors({"codebook": self.quantize.embedding.weight}, path)


# ------------------------------------------------------------------------------ fitting


def _fit_latents(config: PatchVQConfig, tokenizer: PatchTokenizer) -> Tensor:
    data = split(load_images(config.fit_source, config.image_size), "train", config.validation_fraction,
                 config.test_fraction, config.split_seed)
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(len(data.labels), generator=generator)[: config.fit_images].numpy()
    return tokenizer.latent(to_model_range(data.images[chosen], config.image_size, config.channels))


def _fit_raster(config: PatchVQConfig, latent: Tensor) -> Tensor:
    points = latent.flatten(2).transpose(1, 2).reshape(-1, config.dim)
    return kmeans(points, config.codebook_size, config.iterations, config.seed)


def _fit_multiscale(config: PatchMSVQConfig, latent: Tensor) -> Tensor:
    """Scale by scale: each scale's residuals get their own share of the codebook (proportional to
    its number of cells), fitted after the coarser scales' codes were subtracted."""
    q = PatchMSVQ(config, torch.zeros(config.codebook_size, config.dim)).quantize
    generator = torch.Generator().manual_seed(config.seed)
    cells = [pn * pn for pn in q.patch_nums]
    shares = [max(4, round(config.codebook_size * c / sum(cells))) for c in cells]
    shares[-1] = config.codebook_size - sum(shares[:-1])
    codes: list[Tensor] = []
    f_rest = latent.clone()
    for si, pn in enumerate(q.patch_nums):
        rest = f_rest if si == q.num_scales - 1 else q.downsample(f_rest, si)
        rows = rest.permute(0, 2, 3, 1).reshape(-1, config.dim)
        sample = rows[torch.randperm(rows.shape[0], generator=generator)[:MAX_FIT_POINTS]]
        codes.append(kmeans(sample, shares[si], config.iterations, config.seed + si))
        codebook = torch.cat(codes)
        ids = nearest(rows, codebook).view(-1, pn, pn)
        f_rest = f_rest - q.refine(codebook[ids].permute(0, 3, 1, 2), si)
    return torch.cat(codes)


def build_tokenizer(kind: Literal["raster", "multiscale"], config: PatchVQConfig,
                    checkpoint: str | os.PathLike | None = None) -> PatchTokenizer:
    cls = PatchVQ if kind == "raster" else PatchMSVQ
    if checkpoint is not None:
        state = read_weights_file(checkpoint)
        codebook = state.get("codebook") if isinstance(state, dict) else None
        if codebook is None or tuple(codebook.shape) != (config.codebook_size, config.dim):
            raise CheckpointError(f"{checkpoint}: expected a 'codebook' of shape ({config.codebook_size}, "
                                  f"{config.dim}) for this {kind} patch tokenizer")
        return cls(config, codebook)
    latent = _fit_latents(config, cls(config, torch.zeros(config.codebook_size, config.dim)))
    key = fingerprint(kind, config.model_dump(), latent)[:16]  # the data itself, not its name
    path = cache_dir("tokenizers") / f"patch-{kind}-{key}.safetensors"
    if path.is_file():
        return build_tokenizer(kind, config, checkpoint=path)
    codebook = _fit_raster(config, latent) if kind == "raster" else _fit_multiscale(config, latent)
    tokenizer = cls(config, codebook)
    tokenizer.save(path)
    return tokenizer


def build_raster(config: PatchVQConfig, checkpoint: str | os.PathLike | None = None) -> PatchVQ:
    return build_tokenizer("raster", config, checkpoint)


def build_multiscale(config: PatchMSVQConfig, checkpoint: str | os.PathLike | None = None) -> PatchMSVQ:
    return build_tokenizer("multiscale", config, checkpoint)
