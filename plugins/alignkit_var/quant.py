"""VAR's multi-scale residual quantiser (``models/quant.py::VectorQuantizer2``), inference paths only.

A latent ``f`` (B, Cv, H, W) with H = W = pn_last is described by S token maps of growing size.
Scale si quantises the area-downsampled residual, and its codes, bicubic-upsampled back to H×W
and refined by a Phi conv, are added to the running reconstruction ``f_hat``::

    f_hat_si = f_hat_{si-1} + Phi_k(si)( bicubic( embed(ids_si) ) )   (no resize at the last scale)

The teacher-forcing input of scale si+1 is ``area(f_hat_si)`` at pn_{si+1}; generation builds the
same input from sampled codes, so both share ``refine``. Token maps are row-major (b, h, w).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Phi(nn.Conv2d):
    """``h ↦ (1 − r)·h + r·conv3x3(h)``: the learned refinement of one scale's upsampled codes."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h_BChw: Tensor) -> Tensor:
        return h_BChw.mul(1 - self.ratio) + super().forward(h_BChw).mul_(self.ratio)


def phi_ticks(K: int) -> np.ndarray:
    """Where each of K Phis sits on the 0..1 scale axis (float64, the official constants)."""
    return np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)


def phi_index_per_scale(K: int, num_scales: int) -> tuple[int, ...]:
    """The Phi used at each scale: the tick nearest to ``si / (S − 1)``, the first one on a tie.

    Computed in float64 like the official code, because some scales sit exactly between two ticks
    in exact arithmetic (si = 2 of 10 with K = 4) and only the rounding decides.
    """
    ticks = phi_ticks(K)
    return tuple(int(np.argmin(np.abs(ticks - si / (num_scales - 1)))) for si in range(num_scales))


class PhiBank(nn.Module):
    """The Phi convs under the official key layout of each sharing mode.

    ``share_quant_resi`` 1: ``qresi`` (one Phi); 0: ``0 … K-1`` (one per scale, or
    ``default_qresi_counts``); K > 1: ``qresi_ls.0 … K-1``. A ratio of ~0 turns every Phi into an
    identity without weights.
    """

    def __init__(self, channels: int, ratio: float, share_quant_resi: int, num_scales: int,
                 default_qresi_counts: int = 0):
        super().__init__()
        K = 1 if share_quant_resi == 1 else share_quant_resi or default_qresi_counts or num_scales
        phis = [Phi(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity() for _ in range(K)]
        if share_quant_resi == 1:
            self.qresi = phis[0]
        elif share_quant_resi == 0:
            for k, phi in enumerate(phis):
                self.add_module(str(k), phi)
        else:
            self.qresi_ls = nn.ModuleList(phis)
        self.index_per_scale = (0,) * num_scales if K == 1 else phi_index_per_scale(K, num_scales)

    def forward(self, h_BChw: Tensor, si: int) -> Tensor:
        phis = self.qresi_ls if hasattr(self, "qresi_ls") else list(self.children())
        return phis[self.index_per_scale[si]](h_BChw)


class MultiScaleQuantizer(nn.Module):
    """Codebook + Phi convs; the state_dict keys are the official ``quantize.*`` ones."""

    def __init__(self, vocab_size: int, Cvae: int, patch_nums: tuple[int, ...], quant_resi: float = 0.5,
                 share_quant_resi: int = 4, default_qresi_counts: int = 0, using_znorm: bool = False):
        super().__init__()
        self.vocab_size, self.Cvae, self.using_znorm = vocab_size, Cvae, using_znorm
        self.patch_nums = tuple(patch_nums)
        self.quant_resi = PhiBank(Cvae, quant_resi, share_quant_resi, len(self.patch_nums), default_qresi_counts)
        # Only VQVAE training updates it; kept so that official checkpoints load and save unchanged.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def scale_lengths(self) -> list[int]:
        return [pn * pn for pn in self.patch_nums]

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def split(self, tokens_BL: Tensor) -> list[Tensor]:
        """Flat ``tokens_BL`` (scales concatenated) to one ``(B, pn²)`` id map per scale."""
        return list(torch.split(tokens_BL, self.scale_lengths, dim=1))

    def codes(self, ids_Bl: Tensor, pn: int) -> Tensor:
        """Code vectors of one token map, ``(B, Cv, pn, pn)``."""
        return self.embedding(ids_Bl).transpose(1, 2).view(ids_Bl.shape[0], self.Cvae, pn, pn)

    def refine(self, h_BChw: Tensor, si: int) -> Tensor:
        """Scale si's contribution to ``f_hat``: bicubic up to H×W (except at the last scale), then Phi."""
        if si != self.num_scales - 1:
            side = self.patch_nums[-1]
            h_BChw = F.interpolate(h_BChw, size=(side, side), mode="bicubic")
        return self.quant_resi(h_BChw.contiguous(), si)

    def downsample(self, f_hat_BChw: Tensor, si: int) -> Tensor:
        """``f_hat`` area-averaged to scale si's grid."""
        pn = self.patch_nums[si]
        return F.interpolate(f_hat_BChw, size=(pn, pn), mode="area")

    def nearest(self, z_NC: Tensor) -> Tensor:
        """Code ids nearest to each row of ``z_NC`` (the official distance expression, for the same ties)."""
        e_VC = self.embedding.weight
        if self.using_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(e_VC.T, dim=0), dim=1)
        d_NV = z_NC.square().sum(dim=1, keepdim=True) + e_VC.square().sum(dim=1)
        d_NV.addmm_(z_NC, e_VC.T, alpha=-2, beta=1)
        return torch.argmin(d_NV, dim=1)

    @torch.no_grad()
    def quantize(self, f_BChw: Tensor) -> tuple[list[Tensor], Tensor]:
        """Residual quantisation of a latent: the id map of every scale and the final ``f_hat``."""
        B, C, H, W = f_BChw.shape
        if (H, W) != (self.patch_nums[-1],) * 2:
            raise ValueError(f"latent is {H}x{W}, the last scale is {self.patch_nums[-1]}")
        f_rest = f_BChw.detach().float().clone()
        f_hat = torch.zeros_like(f_rest)
        ids_per_scale = []
        for si, pn in enumerate(self.patch_nums):
            rest = f_rest if si == self.num_scales - 1 else self.downsample(f_rest, si)
            ids_N = self.nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            h_BChw = self.refine(self.embedding(ids_N.view(B, pn, pn)).permute(0, 3, 1, 2), si)
            f_hat.add_(h_BChw)
            f_rest.sub_(h_BChw)
            ids_per_scale.append(ids_N.reshape(B, pn * pn))
        return ids_per_scale, f_hat

    @torch.no_grad()
    def fhat_from_ids(self, ids_per_scale: list[Tensor]) -> Tensor:
        """The reconstruction ``f_hat`` (B, Cv, H, W) of a full set of id maps."""
        f_hat = self._zeros(ids_per_scale[0].shape[0])
        for si, pn in enumerate(self.patch_nums):
            f_hat.add_(self.refine(self.codes(ids_per_scale[si], pn), si))
        return f_hat

    @torch.no_grad()
    def var_input(self, ids_per_scale: list[Tensor]) -> Tensor:
        """Teacher-forcing input ``x_BLCv_wo_first_l``: scale si+1's input is ``area(f_hat_si)``, so
        the result has ``L − pn_0²`` rows; only the first ``len(ids) − 1`` scales are read, which
        lets a prefix of scales (progressive training) use a prefix of the id maps."""
        B = ids_per_scale[0].shape[0]
        f_hat = self._zeros(B)
        inputs = []
        for si in range(min(len(ids_per_scale), self.num_scales) - 1):
            f_hat.add_(self.refine(self.codes(ids_per_scale[si], self.patch_nums[si]), si))
            inputs.append(self.downsample(f_hat, si + 1).view(B, self.Cvae, -1).transpose(1, 2))
        if not inputs:
            return f_hat.new_zeros(B, 0, self.Cvae)
        return torch.cat(inputs, dim=1)

    def _zeros(self, B: int) -> Tensor:
        side = self.patch_nums[-1]
        return torch.zeros(B, self.Cvae, side, side, device=self.device)
