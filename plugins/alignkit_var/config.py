"""Typed configs of the VAR transformer and its multi-scale VQVAE, with the official names and defaults.

``VARConfig`` takes the arguments of ``models/__init__.py::build_vae_var`` plus the ``VAR``
constructor's (``embed_dim``, ``num_heads``, ``drop_path_rate`` … derived from ``depth`` exactly as
the factory does unless given). ``VQVAEConfig`` takes the ``VQVAE`` constructor's arguments; the
encoder/decoder layout (``ch_mult=(1,1,2,2,4)``, two res-blocks, attention at the lowest level) is
hard-coded there as in the official code.
"""

from __future__ import annotations

import sys

from pydantic import Field, model_validator

from alignkit import ComponentConfig
from alignkit.recompute import CHECKPOINTING_HELP, Checkpointing

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
DOWNSAMPLE = 16
"""Image pixels per latent cell: ``ch_mult`` has five levels, four of them downsample by 2."""


def check_patch_nums(patch_nums: tuple[int, ...]) -> None:
    """Scales must grow strictly; at least two, because the Phi choice divides by ``S − 1``."""
    if len(patch_nums) < 2:
        raise ValueError(f"patch_nums needs at least 2 scales, got {patch_nums}")
    if patch_nums[0] < 1 or any(b <= a for a, b in zip(patch_nums, patch_nums[1:])):
        raise ValueError(f"patch_nums must be positive and strictly increasing, got {patch_nums}")


class VQVAEConfig(ComponentConfig):
    """The multi-scale VQVAE (``models/vqvae.py::VQVAE``); defaults are the released
    ``vae_ch160v4096z32.pth`` (the class default ``ch`` is 128, the checkpoint uses 160)."""

    vocab_size: int = Field(4096, ge=1)
    z_channels: int = Field(32, ge=1, description="Cvae: channels of the latent and of each code vector")
    ch: int = Field(160, ge=32, description="base width of encoder and decoder; a multiple of 32 (GroupNorm)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    using_znorm: bool = Field(False, description="cosine-similarity code lookup instead of L2 (not used officially)")
    quant_conv_ks: int = Field(3, ge=1, description="kernel of quant_conv / post_quant_conv (odd)")
    quant_resi: float = Field(0.5, description="Phi blend ratio r: (1-r)·h + r·conv(h); |r| <= 1e-6 disables Phi")
    share_quant_resi: int = Field(4, ge=0, description="0: one Phi per scale, 1: one shared Phi, K>1: K Phis")
    default_qresi_counts: int = Field(0, ge=0, description="number of Phis when share_quant_resi=0 (0: one per scale)")
    v_patch_nums: tuple[int, ...] = PATCH_NUMS_256

    @model_validator(mode="after")
    def _check(self) -> VQVAEConfig:
        check_patch_nums(self.v_patch_nums)
        if self.ch % 32:
            raise ValueError(f"ch must be a multiple of 32 (GroupNorm uses 32 groups), got {self.ch}")
        if self.quant_conv_ks % 2 == 0:
            raise ValueError(f"quant_conv_ks must be odd, got {self.quant_conv_ks}")
        return self

    @property
    def image_size(self) -> int:
        return DOWNSAMPLE * self.v_patch_nums[-1]


class VARConfig(ComponentConfig):
    """A VAR transformer and what it needs of its VQVAE (``V``, ``Cvae``, ``ch``, ``share_quant_resi``).

    ``embed_dim = 64·depth``, ``num_heads = depth`` and ``drop_path_rate = 0.1·depth/24`` unless given
    (``build_vae_var``). ``V``, ``Cvae``, ``ch`` and ``share_quant_resi``, when not given, are read from
    the tokenizer (or its checkpoint's shapes). The official constructor's keywords are accepted:
    label dropout (``cond_drop_rate``) is the pair sampler's ``uncond_ratio`` in alignkit (so the model
    is deterministic in eval mode), the CUDA kernel flags are ignored. ``init_*`` only matter for
    random initialisation.
    """

    depth: int = Field(16, ge=1)
    embed_dim: int | None = Field(None, ge=1, description="width C; None = 64·depth")
    num_heads: int | None = Field(None, ge=1, description="None = depth (head_dim 64)")
    mlp_ratio: float = Field(4.0, gt=0)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    attn_drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0, description="max stochastic depth; None = 0.1·depth/24")
    norm_eps: float = Field(1e-6, gt=0)
    shared_aln: bool = Field(False, description="one AdaLN projection shared by all blocks (the d36 model)")
    attn_l2_norm: bool = Field(True, description="cosine attention with a learned per-head scale (every release)")
    patch_nums: tuple[int, ...] = PATCH_NUMS_256
    num_classes: int = Field(1000, ge=1)
    V: int = Field(4096, ge=1, description="codebook size of the VQVAE")
    Cvae: int = Field(32, ge=1, description="code vector width of the VQVAE")
    ch: int = Field(160, ge=32, description="VQVAE base width (used when the tokenizer is built from a path)")
    share_quant_resi: int = Field(4, ge=0, description="VQVAE Phi sharing (see VQVAEConfig)")
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    init_std: float = Field(-1.0, description="< 0: sqrt(1/(3C)) as build_vae_var")
    activation_checkpointing: Checkpointing = Field(False, description=CHECKPOINTING_HELP)
    lambda_conditioning: bool = Field(False, description="test-time λ (CCA Appendix E): add an embedding of log λ "
                                      "to the class embedding, the AdaLN condition too (adds lambda_embed.* weights)")
    cond_drop_rate: float | None = Field(None, ge=0, lt=1, description="the official label dropout: used as "
                                         "sampler.uncond_ratio when the recipe leaves that unset")
    flash_if_available: bool = Field(True, description="accepted for build_vae_var code and ignored: PyTorch's "
                                     "scaled_dot_product_attention picks the kernel")
    fused_if_available: bool = Field(True, description="accepted for build_vae_var code and ignored (fused ops)")

    @model_validator(mode="after")
    def _check(self) -> VARConfig:
        check_patch_nums(self.patch_nums)
        if self.width % self.heads:
            raise ValueError(f"embed_dim {self.width} must be divisible by num_heads {self.heads}")
        ignored = sorted({"flash_if_available", "fused_if_available"} & self.model_fields_set)
        if ignored:
            print(f"note: VAR config {' and '.join(ignored)}: accepted and ignored (PyTorch chooses the attention "
                  "and fused kernels itself)", file=sys.stderr)
        return self

    @property
    def label_dropout(self) -> float | None:
        """What the recipe's ``uncond_ratio`` defaults to (``Recipe.uncond_ratio``)."""
        return self.cond_drop_rate

    @property
    def width(self) -> int:
        return self.embed_dim if self.embed_dim is not None else 64 * self.depth

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else self.depth

    @property
    def max_drop_path(self) -> float:
        return self.drop_path_rate if self.drop_path_rate is not None else 0.1 * self.depth / 24

    def tokenizer_config(self) -> VQVAEConfig:
        """The VQVAE this VAR was trained with (the official checkpoint's layout)."""
        return VQVAEConfig(vocab_size=self.V, z_channels=self.Cvae, ch=self.ch,
                           share_quant_resi=self.share_quant_resi, v_patch_nums=self.patch_nums)


VAR_PRESETS = {
    "d16": {"depth": 16},
    "d20": {"depth": 20},
    "d24": {"depth": 24},
    "d30": {"depth": 30},
    "d36": {"depth": 36, "shared_aln": True, "patch_nums": PATCH_NUMS_512},
}
"""The released models (``var_d{16,20,24,30}.pth`` at 256 px, ``var_d36.pth`` at 512 px)."""

VQVAE_PRESETS = {"256": {"v_patch_nums": PATCH_NUMS_256}, "512": {"v_patch_nums": PATCH_NUMS_512}}
"""``vae_ch160v4096z32.pth`` tokenising 256 px or 512 px images."""
