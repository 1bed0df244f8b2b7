"""The multi-scale VQVAE as an alignkit ``Tokenizer`` (``models/vqvae.py::VQVAE``, test mode).

Images in [-1, 1] become one id map per scale; the flat form ``tokens_BL`` concatenates them in
scale order (L = Σ pn²), which is what VAR's ``logits`` and ``generate`` use. Decoding clamps to
[-1, 1] like the official ``fhat_to_img``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import Tensor, nn

from alignkit import Tokenizer
from alignkit.checkpoints import save_safetensors, save_torch

from alignkit_var.config import VQVAEConfig
from alignkit_var.quant import MultiScaleQuantizer
from alignkit_var.vae_nets import Decoder, Encoder


class VQVAE(Tokenizer):
    """Encoder → ``quant_conv`` → residual quantiser; ids → ``f_hat`` → ``post_quant_conv`` → decoder.

    Always frozen (``eval``, no gradients), as the official ``test_mode=True``.
    """

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.seq_len = sum(pn * pn for pn in config.v_patch_nums)
        self.image_size = config.image_size
        self.encoder = Encoder(config.ch, config.z_channels, config.dropout)
        self.decoder = Decoder(config.ch, config.z_channels, config.dropout)
        self.quantize = MultiScaleQuantizer(config.vocab_size, config.z_channels, config.v_patch_nums,
                                            config.quant_resi, config.share_quant_resi,
                                            config.default_qresi_counts, config.using_znorm)
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, stride=1, padding=ks // 2)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def latent(self, images_B3HW: Tensor) -> Tensor:
        """``quant_conv(encoder(images))``: the continuous latent (B, Cv, pn_last, pn_last)."""
        if images_B3HW.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"images are {tuple(images_B3HW.shape[-2:])}, this VQVAE takes "
                             f"{self.image_size}x{self.image_size} (16 × the last patch size)")
        return self.quant_conv(self.encoder(images_B3HW.float()))

    def encode_per_scale(self, images_B3HW: Tensor) -> list[Tensor]:
        """One ``(B, pn²)`` int64 id map per scale (``img_to_idxBl``)."""
        return self.quantize.quantize(self.latent(images_B3HW))[0]

    def encode(self, images_B3HW: Tensor) -> Tensor:
        """``tokens_BL``: the id maps of all scales concatenated (L = Σ pn²)."""
        return torch.cat(self.encode_per_scale(images_B3HW), dim=1)

    @torch.no_grad()
    def decode_fhat(self, f_hat_BChw: Tensor) -> Tensor:
        """Images in [-1, 1] from an accumulated ``f_hat`` (``fhat_to_img``); VAR's ``more_smooth``
        sampling produces an ``f_hat`` that no id set describes, so it is decoded through here."""
        return self.decoder(self.post_quant_conv(f_hat_BChw.float())).clamp_(-1, 1)

    def decode(self, tokens_BL: Tensor) -> Tensor:
        """Images in [-1, 1] from flat tokens (or a list of per-scale id maps)."""
        ids_per_scale = self.quantize.split(tokens_BL) if isinstance(tokens_BL, Tensor) else tokens_BL
        return self.decode_fhat(self.quantize.fhat_from_ids(ids_per_scale))

    def official_state_dict(self) -> OrderedDict[str, Tensor]:
        """The official ``VQVAE.state_dict()`` keys (324 for ch160, ``ema_vocab_hit_SV`` included), on the CPU."""
        return OrderedDict((k, v.detach().cpu()) for k, v in self.state_dict().items())

    def save_official(self, path: str | os.PathLike) -> None:
        """A plain state_dict, as ``vae_ch160v4096z32.pth`` is, written atomically."""
        save_torch(self.official_state_dict(), path)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        save_safetensors(self.official_state_dict(), path)
