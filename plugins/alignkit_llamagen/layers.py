"""The building blocks of the LlamaGen GPT, with the official module names (so that ``state_dict``
keys are the official ones), and the per-call KV cache used by generation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignkit_llamagen.config import GPTConfig
from alignkit_llamagen.rope import apply_rotary


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, normalised in float32 and cast back before the (fp32) weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x * rsqrt(mean(x²) + eps), one kernel
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``, bias-free, then dropout."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.ffn_hidden_dim
        self.w1 = nn.Linear(config.dim, hidden, bias=False)
        self.w3 = nn.Linear(config.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, config.dim, bias=False)
        self.ffn_dropout = nn.Dropout(config.ffn_dropout_p)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class KVCache:
    """Keys and values of every layer for one ``generate`` call, allocated once for its batch.

    It lives only as long as the call (never as a module attribute), so the model's ``state_dict``
    and training forward are untouched by sampling. ``keep_rows`` drops trailing rows (the
    unconditional half once guidance has ended) without copying.
    """

    def __init__(self, config: GPTConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        shape = (config.n_layer, batch, config.kv_heads, max_len, config.head_dim)
        self.k_NBKSH = torch.empty(shape, dtype=dtype, device=device)
        self.v_NBKSH = torch.empty(shape, dtype=dtype, device=device)
        self.rows = batch
        self.length = 0

    def append(self, layer: int, k_BKSH: Tensor, v_BKSH: Tensor) -> tuple[Tensor, Tensor]:
        """Store one step's keys/values of ``layer`` and return all keys/values so far."""
        end = self.length + k_BKSH.shape[2]
        k_cache, v_cache = self.k_NBKSH[layer, : self.rows], self.v_NBKSH[layer, : self.rows]
        k_cache[:, :, self.length:end] = k_BKSH
        v_cache[:, :, self.length:end] = v_BKSH
        return k_cache[:, :, :end], v_cache[:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def keep_rows(self, rows: int) -> None:
        self.rows = rows


class Attention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with 2D RoPE, through SDPA."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.attn_dropout_p = config.attn_dropout_p
        self.resid_dropout = nn.Dropout(config.resid_dropout_p)

    def forward(self, x_BSD: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache | None = None,
                layer: int = 0) -> Tensor:
        B, S, D = x_BSD.shape
        n_qk, hd = self.n_head + self.n_kv_head, self.head_dim
        qkv = self.wqkv(x_BSD)
        # Queries and keys are rotated together: the rows of wqkv are q heads, then k heads, then v heads.
        qk_BSNH = apply_rotary(qkv[..., : n_qk * hd].view(B, S, n_qk, hd), *rope)
        q_BNSH = qk_BSNH[:, :, : self.n_head].transpose(1, 2)
        k_BKSH = qk_BSNH[:, :, self.n_head:].transpose(1, 2)
        v_BKSH = qkv[..., n_qk * hd:].view(B, S, self.n_kv_head, hd).transpose(1, 2)
        if cache is not None:
            # Decoding feeds one position per call (model.decode_step): it may see every cached key.
            k_BKSH, v_BKSH = cache.append(layer, k_BKSH, v_BKSH)
        if self.n_kv_head != self.n_head:
            k_BKSH = k_BKSH.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v_BKSH = v_BKSH.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        out_BNSH = F.scaled_dot_product_attention(
            q_BNSH, k_BKSH, v_BKSH, is_causal=cache is None and S > 1,
            dropout_p=self.attn_dropout_p if self.training else 0.0)
        return self.resid_dropout(self.wo(out_BNSH.transpose(1, 2).reshape(B, S, D)))


class DropPath(nn.Module):
    """Per-sample stochastic depth (timm semantics, scaled by 1/keep), active only in training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class TransformerBlock(nn.Module):
    """Pre-norm block: ``h = x + attn(norm(x))``, ``out = h + ffn(norm(h))``, with drop-path."""

    def __init__(self, config: GPTConfig, drop_path: float):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x_BSD: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache | None = None,
                layer: int = 0) -> Tensor:
        """``rope``: the ``(cos_SD, sin_SD)`` rows of the ``S`` positions of ``x`` (``rope.rotation_tables``)."""
        h_BSD = x_BSD + self.drop_path(self.attention(self.attention_norm(x_BSD), rope, cache, layer))
        return h_BSD + self.drop_path(self.feed_forward(self.ffn_norm(h_BSD)))


class ClassEmbedding(nn.Module):
    """The class table, ``num_classes + 1`` rows: the last row is the null (unconditional) class.

    Unlike the official ``LabelEmbedder`` it never drops labels itself; trainers relabel rows to the
    null class, so the forward is deterministic given its inputs.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels_B: Tensor) -> Tensor:
        return self.embedding_table(labels_B).unsqueeze(1)
