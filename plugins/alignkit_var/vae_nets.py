"""The VQVAE's convolutional encoder and decoder (``models/basic_vae.py``), under the official key names.

LDM/taming-style nets with VAR's differences: one 1×1 ``qkv`` conv per attention block, no
``double_z``, attention only at the lowest resolution, and a decoder whose ``up`` list is stored in
level order (``up.0`` is full resolution) but run from the last level to the first.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

CH_MULT = (1, 1, 2, 2, 4)
NUM_RES_BLOCKS = 2


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` with a 1×1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels
                             else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        # in place, as the official nets: one full-resolution tensor fewer per activation, same values
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, scale ``C^-1/2``, with a residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        w_BNN = (q.transpose(1, 2).contiguous() @ k.contiguous()).mul_(C ** -0.5).softmax(dim=2)
        h_BCN = v.contiguous() @ w_BNN.transpose(1, 2).contiguous()
        return x + self.proj_out(h_BCN.view(B, C, H, W))


class Downsample2x(nn.Module):
    """Zero-pad right and bottom, then a stride-2 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2x(nn.Module):
    """Nearest ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """One resolution: res-blocks, each followed by attention where ``attn`` is not empty, then an
    optional resize (``downsample`` in the encoder, ``upsample`` in the decoder)."""

    def __init__(self, widths: list[tuple[int, int]], dropout: float, with_attn: bool):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o, dropout) for i, o in widths)
        self.attn = nn.ModuleList(AttnBlock(o) for _, o in widths) if with_attn else nn.ModuleList()

    def forward(self, h: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        for resize in ("downsample", "upsample"):
            if hasattr(self, resize):
                h = getattr(self, resize)(h)
        return h


class Middle(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B, 3, 16h, 16w) to latent (B, z_channels, h, w)."""

    def __init__(self, ch: int, z_channels: int, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(CH_MULT):
            block_out = ch * mult
            widths = [(block_in, block_out)] + [(block_out, block_out)] * (NUM_RES_BLOCKS - 1)
            level = Level(widths, dropout, with_attn=i == len(CH_MULT) - 1)
            if i != len(CH_MULT) - 1:
                level.downsample = Downsample2x(block_out)
            self.down.append(level)
            block_in = block_out
        self.mid = Middle(block_in, dropout)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h)), inplace=True))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) to image (B, 3, 16h, 16w), unclamped."""

    def __init__(self, ch: int, z_channels: int, dropout: float = 0.0, out_channels: int = 3):
        super().__init__()
        block_in = ch * CH_MULT[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = Middle(block_in, dropout)
        levels = []
        for i in reversed(range(len(CH_MULT))):
            block_out = ch * CH_MULT[i]
            widths = [(block_in, block_out)] + [(block_out, block_out)] * NUM_RES_BLOCKS
            level = Level(widths, dropout, with_attn=i == len(CH_MULT) - 1)
            if i != 0:
                level.upsample = Upsample2x(block_out)
            levels.insert(0, level)
            block_in = block_out
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))
