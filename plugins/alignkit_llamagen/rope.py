"""LlamaGen's 2D rotary position embedding.

Each head's ``head_dim`` channels form ``head_dim / 2`` interleaved pairs ``(x[2j], x[2j+1])``; the
first half of the pairs rotates by the token's grid row, the second half by its column. The table
starts with ``cls_token_num`` rows of (cos, sin) = (0, 0): the official code multiplies the class
token's query and key by zero (it does not leave them unrotated), so every image query gives the
class key a score of exactly 0 while still mixing in its value.
"""

from __future__ import annotations

import torch
from torch import Tensor


def precompute_freqs_cis_2d(grid_size: int, head_dim: int, base: float = 10000,
                            cls_token_num: int = 1) -> Tensor:
    """``freqs_SH2`` float32 on the CPU, ``S = cls_token_num + grid_size**2`` rows of ``head_dim / 2``
    (cos, sin) pairs, in raster order of the grid."""
    half = head_dim // 2
    # Built on the CPU explicitly: a model constructed under `torch.device("meta")` still needs real values.
    exponents = torch.arange(0, half, 2, device="cpu")[: half // 2].float() / half
    inv_freq_F = 1.0 / (base ** exponents)
    angle_GF = torch.outer(torch.arange(grid_size, device="cpu"), inv_freq_F)
    F = inv_freq_F.shape[0]
    angle_GGH = torch.cat([angle_GF[:, None, :].expand(-1, grid_size, -1),
                           angle_GF[None, :, :].expand(grid_size, -1, -1)], dim=-1)
    table_SH2 = torch.stack([torch.cos(angle_GGH), torch.sin(angle_GGH)], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(cls_token_num, 2 * F, 2, device="cpu"), table_SH2])


def rotation_tables(freqs_SH2: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos_SD, sin_SD)`` per channel (``D = head_dim``) for ``apply_rotary``: each pair's cosine
    twice, and its sine as (−sin, +sin)."""
    cos_SH, sin_SH = freqs_SH2.unbind(-1)
    return cos_SH.repeat_interleave(2, dim=-1), torch.stack([-sin_SH, sin_SH], dim=-1).flatten(-2)


def apply_rotary(x_BSND: Tensor, cos_SD: Tensor, sin_SD: Tensor) -> Tensor:
    """Rotate the interleaved channel pairs of ``x`` (batch, positions, heads, head_dim) by the
    angles of its positions, in float32 (as the official code), returning ``x``'s dtype.

    ``out[2j] = x[2j] cos − x[2j+1] sin``, ``out[2j+1] = x[2j+1] cos + x[2j] sin``, written as
    ``x·cos + swap_pairs(x)·(∓sin)``: the same roundings as the official formula (``a + (−b)`` is
    ``a − b`` exactly) in a third of the kernels, which matters for one-token decode steps.
    """
    x = x_BSND.float()
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x * cos_SD[:, None] + swapped * sin_SD[:, None]).type_as(x_BSND)
