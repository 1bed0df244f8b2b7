"""Typed configs of the LlamaGen GPT and its VQ tokenizer, with the official field names and defaults.

``GPTConfig`` mirrors LlamaGen's ``autoregressive/models/gpt.py::ModelArgs``; ``VQConfig`` mirrors
``tokenizer/tokenizer_image/vq_model.py::ModelArgs`` plus the Encoder/Decoder constructor constants
that the official code hides (``ch``, ``num_res_blocks``) and the image size the tokens describe.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from alignkit import ComponentConfig
from alignkit.recompute import CHECKPOINTING_HELP, Checkpointing


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of ``k`` that is >= ``n`` (LlamaGen's SwiGLU width rounding)."""
    return n if n % k == 0 else n + k - n % k


class GPTConfig(ComponentConfig):
    """A class-conditional LlamaGen GPT (``ModelArgs`` field names and defaults).

    The class table always has ``num_classes + 1`` rows (the null class is ``num_classes``); label
    dropout is the trainer's job, so ``class_dropout_prob`` is accepted only so that an official
    ``ModelArgs`` dict validates as is. ``caption_dim``, ``max_batch_size`` and ``max_seq_len`` are
    unused by the official c2i model too.
    """

    dim: int = Field(4096, ge=1)
    n_layer: int = Field(32, ge=1)
    n_head: int = Field(32, ge=1)
    n_kv_head: int | None = Field(None, ge=1, description="key/value heads (GQA); None = n_head")
    multiple_of: int = Field(256, ge=1)
    ffn_dim_multiplier: float | None = Field(None, gt=0)
    rope_base: float = Field(10000, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    initializer_range: float = Field(0.02, ge=0)
    token_dropout_p: float = Field(0.1, ge=0.0, lt=1.0)
    attn_dropout_p: float = Field(0.0, ge=0.0, lt=1.0)
    resid_dropout_p: float = Field(0.1, ge=0.0, lt=1.0)
    ffn_dropout_p: float = Field(0.1, ge=0.0, lt=1.0)
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    num_classes: int = Field(1000, ge=1)
    class_dropout_prob: float = Field(0.1, ge=0.0, lt=1.0)
    model_type: Literal["c2i"] = "c2i"
    caption_dim: int = 2048
    vocab_size: int = Field(16384, ge=1)
    cls_token_num: int = 1
    block_size: int = Field(256, ge=1, description="image tokens per sample, a perfect square")
    max_batch_size: int = 32
    max_seq_len: int = 2048
    activation_checkpointing: Checkpointing = Field(False, description=CHECKPOINTING_HELP)
    lambda_conditioning: bool = Field(False, description="test-time λ (CCA Appendix E): add an embedding of log λ "
                                      "to the class embedding (adds lambda_embed.* weights)")

    @model_validator(mode="after")
    def _check_shapes(self) -> GPTConfig:
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} must be divisible by n_head {self.n_head}")
        if self.head_dim % 4:
            raise ValueError(f"head_dim = dim / n_head = {self.head_dim} must be a multiple of 4 for the 2D RoPE "
                             "(half of the rotation pairs encode the row, half the column)")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} must be a multiple of n_kv_head {self.kv_heads}")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(f"block_size {self.block_size} must be a perfect square (a square token grid, "
                             "e.g. 256 = 16x16 at 256 px or 576 = 24x24 at 384 px with VQ-16)")
        if self.cls_token_num != 1:
            raise ValueError(f"cls_token_num must be 1 for a class-conditional (c2i) model, got {self.cls_token_num}")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU width: 2/3 of 4·dim, optionally scaled, rounded up to ``multiple_of``."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)


_C2I = {"vocab_size": 16384, "num_classes": 1000, "block_size": 576}

GPT_PRESETS: dict[str, dict[str, int]] = {
    "B": {"n_layer": 12, "n_head": 12, "dim": 768, **_C2I},
    "L": {"n_layer": 24, "n_head": 16, "dim": 1024, **_C2I},
    "XL": {"n_layer": 36, "n_head": 20, "dim": 1280, **_C2I},
    "XXL": {"n_layer": 48, "n_head": 24, "dim": 1536, **_C2I},
    "XXXL": {"n_layer": 48, "n_head": 40, "dim": 2560, **_C2I},
    "1B": {"n_layer": 22, "n_head": 32, "dim": 2048, **_C2I},
    "3B": {"n_layer": 24, "n_head": 32, "dim": 3200, **_C2I},
    "7B": {"n_layer": 32, "n_head": 32, "dim": 4096, **_C2I},
}
"""The official ``GPT_models`` sizes at 384 px (24x24 VQ-16 tokens), as CCA fine-tunes them."""

FSDP_SIZES = frozenset({"XXL", "XXXL", "1B", "3B", "7B"})
"""Sizes LlamaGen trains with FSDP; their official files (and samplers' ``--from-fsdp``) are raw state_dicts."""


def preset_of(config: GPTConfig) -> str | None:
    """The official size name whose width, depth and heads ``config`` has, else ``None``."""
    for name, preset in GPT_PRESETS.items():
        if (config.dim, config.n_layer, config.n_head) == (preset["dim"], preset["n_layer"], preset["n_head"]):
            return name
    return None


class VQConfig(ComponentConfig):
    """LlamaGen's VQ tokenizer (``VQ_16`` / ``VQ_8``); ``ch`` and ``num_res_blocks`` are the hidden
    Encoder/Decoder constants, exposed so that smaller tokenizers (the test fixture) can be described.

    The tokenizer is frozen in alignkit: ``commit_loss_beta`` and ``entropy_loss_ratio`` (training
    losses) are accepted only so that an official ``ModelArgs`` dict validates as is.
    """

    codebook_size: int = Field(16384, ge=1)
    codebook_embed_dim: int = Field(8, ge=1)
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = Field(True, description="keep the official quantize.codebook_used buffer")
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: list[int] = Field(default_factory=lambda: [1, 1, 2, 2, 4], min_length=1)
    decoder_ch_mult: list[int] = Field(default_factory=lambda: [1, 1, 2, 2, 4], min_length=1)
    z_channels: int = Field(256, ge=1)
    dropout_p: float = Field(0.0, ge=0.0, lt=1.0)
    ch: int = Field(128, ge=1, description="base channels of the encoder and decoder")
    num_res_blocks: int = Field(2, ge=1)
    image_size: int = Field(384, ge=1, description="pixels per side of the images the tokens describe")

    @model_validator(mode="after")
    def _check_shapes(self) -> VQConfig:
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError(f"encoder_ch_mult {self.encoder_ch_mult} and decoder_ch_mult {self.decoder_ch_mult} "
                             "must have the same length (the decoder undoes the encoder's downsampling)")
        for mult in {*self.encoder_ch_mult, *self.decoder_ch_mult}:
            if mult < 1 or (self.ch * mult) % 32:
                raise ValueError(f"ch * ch_mult = {self.ch} * {mult} must be a positive multiple of 32 "
                                 "(GroupNorm with 32 groups)")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the downsampling factor "
                             f"{self.downsample}")
        return self

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample


VQ_PRESETS: dict[str, dict[str, object]] = {
    "16": {"encoder_ch_mult": [1, 1, 2, 2, 4], "decoder_ch_mult": [1, 1, 2, 2, 4], "image_size": 384},
    "8": {"encoder_ch_mult": [1, 2, 2, 4], "decoder_ch_mult": [1, 2, 2, 4], "image_size": 256},
}
"""``vq_ds16_c2i.pt`` at 384 px (24x24 tokens, as the GPT presets) and ``vq_ds8_c2i.pt`` at 256 px (32x32)."""
