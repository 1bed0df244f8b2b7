"""LlamaGen's VQ tokenizer (``VQ-16`` / ``VQ-8``) as an alignkit ``Tokenizer``.

A convolutional encoder maps images in [-1, 1] to a ``z_channels`` latent, a 1x1 ``quant_conv``
projects it to the codebook dimension, and each position takes its nearest L2-normalised codebook
row; the decoder mirrors the encoder. Module names follow the official code, so ``state_dict()``
has exactly the official keys (including the ``quantize.codebook_used`` training statistic).
"""

from __future__ import annotations

import math
import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit import AlignkitError, Tokenizer
from alignkit_llamagen.config import VQConfig
from alignkit_llamagen.io import save_vq_official

CODEBOOK_USAGE_SLOTS = 65536
"""Length of the official ``codebook_used`` buffer (a rolling window of recent code ids)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """``skip(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x)))))))``; 1x1 skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map, with a residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x_BCHW: Tensor) -> Tensor:
        B, C, H, W = x_BCHW.shape
        h = self.norm(x_BCHW)

        def tokens(conv: nn.Conv2d) -> Tensor:  # (B, 1, HW, C): one head over the H*W positions
            return conv(h).reshape(B, C, H * W).transpose(1, 2).unsqueeze(1)

        out_B1NC = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        return x_BCHW + self.proj_out(out_B1NC.squeeze(1).transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: ResnetBlocks (each followed by an AttnBlock at the deepest level), then an
    optional resampling, registered under its official name (``downsample`` / ``upsample``)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, attention: bool, dropout: float,
                 resample: Literal["downsample", "upsample"] | None):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout)
                                 for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(blocks) if attention)
        self.resample = resample
        if resample == "downsample":
            self.downsample = Downsample(out_channels)
        elif resample == "upsample":
            self.upsample = Upsample(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        for i, res in enumerate(self.res):
            x = res(x)
            if len(self.attn):
                x = self.attn[i](x)
        return getattr(self, self.resample)(x) if self.resample else x


def _mid(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels, dropout), AttnBlock(channels),
                          ResnetBlock(channels, channels, dropout)])


class Encoder(nn.Module):
    """Images (B, 3, H, W) to latents (B, z_channels, H/d, W/d), d = 2^(levels - 1)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult, n = config.ch, config.encoder_ch_mult, len(config.encoder_ch_mult)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        in_mult = (1, *mult)
        self.conv_blocks = nn.ModuleList(
            Level(ch * in_mult[i], ch * mult[i], config.num_res_blocks, attention=i == n - 1,
                  dropout=config.dropout_p, resample="downsample" if i != n - 1 else None)
            for i in range(n))
        top = ch * mult[-1]
        self.mid = _mid(top, config.dropout_p)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, config.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents (B, z_channels, h, w) to images (B, 3, h*d, w*d); ``conv_blocks.0`` is the deepest level."""

    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mult = config.ch, config.decoder_ch_mult
        top = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, top, 3, padding=1)
        self.mid = _mid(top, config.dropout_p)
        widths = [ch * m for m in reversed(mult)]
        self.conv_blocks = nn.ModuleList(
            Level(widths[j - 1] if j else top, widths[j], config.num_res_blocks + 1, attention=j == 0,
                  dropout=config.dropout_p, resample="upsample" if j != len(widths) - 1 else None)
            for j in range(len(widths)))
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook row by Euclidean distance; with ``l2_norm`` both the latent and the codebook
    are L2-normalised at every call (the stored codebook need not be unit-norm)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.l2_norm = config.codebook_l2_norm
        if config.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USAGE_SLOTS))
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / config.codebook_size, 1.0 / config.codebook_size)
            if self.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, p=2, dim=-1))

    def codebook(self) -> Tensor:
        """``(codebook_size, embed_dim)``, normalised when ``l2_norm``."""
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def forward(self, z_BCHW: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_q_BCHW, codes_BHW)``: the chosen rows (with a straight-through gradient to ``z``) and
        their int64 ids (the first on ties)."""
        z_BHWC = z_BCHW.permute(0, 2, 3, 1).contiguous()
        if self.l2_norm:
            z_BHWC = F.normalize(z_BHWC, p=2, dim=-1)
        z_NC = z_BHWC.reshape(-1, z_BHWC.shape[-1])
        codebook_KC = self.codebook()
        dist_NK = z_NC.pow(2).sum(1, keepdim=True) + codebook_KC.pow(2).sum(1) - 2 * z_NC @ codebook_KC.t()
        codes_N = dist_NK.argmin(dim=1)
        z_q_BHWC = codebook_KC[codes_N].view(z_BHWC.shape)
        z_q_BHWC = z_BHWC + (z_q_BHWC - z_BHWC).detach()
        return z_q_BHWC.permute(0, 3, 1, 2).contiguous(), codes_N.view(z_BHWC.shape[:3])


class LlamaGenVQ(Tokenizer):
    """Images in [-1, 1] to raster-order code ids and back (``vq_ds16_c2i.pt`` / ``vq_ds8_c2i.pt``)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.image_size = config.codebook_size, config.image_size
        self.seq_len = config.grid_size ** 2
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    def pre_quant(self, images_B3HW: Tensor) -> Tensor:
        """The latent before quantisation, ``(B, embed_dim, H/d, W/d)``."""
        d = self.config.downsample
        if images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3 or images_B3HW.shape[2] % d or images_B3HW.shape[3] % d:
            raise AlignkitError(f"images have shape {tuple(images_B3HW.shape)}; the VQ tokenizer expects "
                                f"(B, 3, H, W) with H and W multiples of {d}")
        return self.quant_conv(self.encoder(images_B3HW))

    def encode(self, images_B3HW: Tensor) -> Tensor:
        """``tokens_BL`` int64 in raster order (row-major over the ``H/d x W/d`` grid)."""
        _, codes_BHW = self.quantize(self.pre_quant(images_B3HW))
        return codes_BHW.flatten(1)

    def latent(self, tokens_BL: Tensor) -> Tensor:
        """The (normalised) codebook vectors of square token grids, ``(B, embed_dim, g, g)``."""
        g = math.isqrt(tokens_BL.shape[-1])
        if tokens_BL.ndim != 2 or g * g != tokens_BL.shape[-1]:
            raise AlignkitError(f"tokens have shape {tuple(tokens_BL.shape)}; expected (B, L) with L a square")
        z_BggC = self.quantize.codebook()[tokens_BL.long()].view(tokens_BL.shape[0], g, g, -1)
        return z_BggC.permute(0, 3, 1, 2).contiguous()

    def decode_latent(self, z_q_BCHW: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q_BCHW))

    def decode(self, tokens_BL: Tensor) -> Tensor:
        """Images ``(B, 3, g*d, g*d)``, roughly in [-1, 1] (not clamped)."""
        return self.decode_latent(self.latent(tokens_BL))

    def forward(self, images_B3HW: Tensor) -> Tensor:
        """Reconstruction through the quantiser (straight-through gradients)."""
        z_q_BCHW, _ = self.quantize(self.pre_quant(images_B3HW))
        return self.decode_latent(z_q_BCHW)

    def save_official(self, path: str | os.PathLike) -> None:
        """``{"model": sd}`` with the official keys, as ``vq_ds16_c2i.pt``."""
        save_vq_official(self, path)
