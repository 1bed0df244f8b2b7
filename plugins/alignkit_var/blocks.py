"""VAR's transformer pieces (``models/basic_var.py``): AdaLN self-attention blocks and the AdaLN head.

Every block is conditioned on the class embedding through six vectors
``gamma1, gamma2, scale1, scale2, shift1, shift2`` (in this order along the projection's output)::

    x = x + DropPath( attn( LN(x)·(1 + scale1) + shift1 ) · gamma1 )
    x = x + DropPath( ffn ( LN(x)·(1 + scale2) + shift2 ) · gamma2 )

With shared AdaLN (d36) one model-level projection produces them and each block only adds its own
learned offset ``ada_gss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_SCALE_MUL = math.log(100.0)
"""Upper clamp of the learned log attention scale (``scale_mul_1H11``) of L2-normalised attention."""


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability p, rescale the rest."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


@dataclass
class KVCache:
    """Keys and values of the scales generated so far, for one attention layer (BHLc each).

    Next-scale generation feeds one whole scale per step and each scale attends to itself and to
    every earlier scale, so appending and attending without a mask is exactly the block-causal mask.
    """

    k: Tensor | None = None
    v: Tensor | None = None

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SelfAttention(nn.Module):
    """Multi-head attention with a q and v bias but no k bias (``zero_k_bias`` is a saved zero buffer).

    ``attn_l2_norm``: q and k are L2-normalised and q is scaled by ``exp(min(scale_mul, ln 100))``
    per head; otherwise the logits are scaled by ``0.25 / sqrt(head_dim)`` (note the 0.25).
    """

    def __init__(self, width: int, num_heads: int, attn_drop: float, proj_drop: float, attn_l2_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        self.attn_drop = attn_drop

    def forward(self, x_BLC: Tensor, attn_bias: Tensor | None, cache: KVCache | None = None) -> Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp())
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, L, C)))


class SharedAdaLin(nn.Linear):
    """The d36 model-level AdaLN projection; its output is viewed as (B, 1, 6, C)."""

    def forward(self, cond_BD: Tensor) -> Tensor:
        return super().forward(cond_BD).view(-1, 1, 6, self.out_features // 6)


class AdaLNSelfAttn(nn.Module):
    """One transformer block. ``cond`` is the class embedding (B, D), or with shared AdaLN the
    model-level projection (B, 1, 6, C)."""

    def __init__(self, width: int, cond_dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float,
                 drop_path: float, norm_eps: float, shared_aln: bool, attn_l2_norm: bool):
        super().__init__()
        self.width, self.shared_aln = width, shared_aln
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, width) / width ** 0.5)
        self.attn = SelfAttention(width, num_heads, attn_drop, drop, attn_l2_norm)
        self.ffn = FFN(width, round(width * mlp_ratio), drop)
        self.ln_wo_grad = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        if not shared_aln:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * width))
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC: Tensor, cond: Tensor, attn_bias: Tensor | None, cache: KVCache | None = None) -> Tensor:
        mods_B16C = self.ada_gss + cond if self.shared_aln else self.ada_lin(cond).view(-1, 1, 6, self.width)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods_B16C.unbind(2)
        h = self.attn(self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1), attn_bias, cache)
        # Out of place: h is the projection's output, which selective checkpointing keeps unmodified.
        x_BLC = x_BLC + self.drop_path(h.mul(gamma1))
        h = self.ffn(self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2))
        return x_BLC + self.drop_path(h.mul(gamma2))


class AdaLNBeforeHead(nn.Module):
    """The final ``LN(x)·(1 + scale) + shift``, conditioned on the raw class embedding."""

    def __init__(self, width: int, cond_dim: int, norm_eps: float):
        super().__init__()
        self.width = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))

    def forward(self, x_BLC: Tensor, cond_BD: Tensor) -> Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.width).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
