"""Next-scale sampling (``VAR.autoregressive_infer_cfg``) with a KV cache and optional guidance.

Per scale si: run the blocks on that scale's input (the cache holds every earlier scale), mix the
conditional and unconditional logits as ``(1 + t)·c − t·u`` with ``t = guidance_at(guidance,
schedule, si, S)`` (``linear`` is VAR's ramp ``s·si/(S−1)``, the CCA paper's "CFGv2"), filter
(shared top-k/top-p), draw every position of the scale at once, and feed the area-downsampled
reconstruction to the next scale. ``guidance == 0`` evaluates the conditional rows only.

Seeded runs reproduce the official ones: pass ``torch.Generator().manual_seed(g_seed)``; the draw is
``multinomial(..., replacement=True)`` over the (B·pn²) rows, followed, with ``more_smooth``, by the
Gumbel noise from ``exponential_`` on the same generator. ``sampler="inverse_cdf"`` draws from the same
distribution with one random number per position (``alignkit.sample.tokens``), and without
``more_smooth`` from the top-k survivors alone instead of the filtered vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alignkit_conditioning import lambda_rows
from alignkit.errors import AlignkitError
from alignkit.sample.tokens import Sampler, Schedule, draw_tokens, filter_logits, guidance_at, sample_tokens

from alignkit_var.blocks import KVCache

if TYPE_CHECKING:
    from alignkit_var.model import VAR


@dataclass(frozen=True)
class Stage:
    """What one scale of sampling produced."""

    si: int
    logits_BlV: Tensor
    """After guidance, before temperature and filtering (fp32)."""
    ids_Bl: Tensor
    """The sampled ids (with ``more_smooth`` they are drawn but the reconstruction ignores them)."""
    f_hat_BChw: Tensor
    """The reconstruction accumulated up to and including this scale."""


def gumbel_softmax(logits_BlV: Tensor, tau: float, generator: torch.Generator | None) -> Tensor:
    """Soft Gumbel-softmax sample whose noise comes from ``generator`` (``torch``'s has no generator)."""
    gumbels_BlV = -torch.empty_like(logits_BlV).exponential_(generator=generator).log()
    return ((logits_BlV + gumbels_BlV) / tau).softmax(dim=-1)


@torch.no_grad()
def sample_stages(model: VAR, labels_B: Tensor, *, guidance: float = 0.0, schedule: Schedule = "linear",
                  top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False, temperature: float = 1.0,
                  generator: torch.Generator | None = None, greedy: bool = False,
                  lambda_: float | None = None, sampler: Sampler = "official") -> Iterator[Stage]:
    """Yield one ``Stage`` per scale. The model runs in eval mode meanwhile (no dropout/drop-path);
    the KV caches are local, so nothing stays attached to the model afterwards."""
    q = model.quantizer
    S, V, Cv, first_l = len(model.patch_nums), model.vocab_size, model.Cvae, model.first_l
    labels_B = torch.as_tensor(labels_B, dtype=torch.int64, device=model.pos_1LC.device).reshape(-1)
    if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) > model.num_classes):
        raise AlignkitError(f"labels span [{int(labels_B.min())}, {int(labels_B.max())}], the model has "
                            f"{model.num_classes} classes (null class {model.num_classes})")
    guidance_at(guidance, schedule, 0, S)  # reject an unknown schedule even when guidance is off
    B, guided = labels_B.shape[0], guidance != 0
    if guided:
        labels_B = torch.cat((labels_B, torch.full_like(labels_B, model.null_label)))
    rows = labels_B.shape[0]

    cond_BD = model.condition(labels_B, lambda_rows(lambda_, rows, labels_B.device))
    cond = model.shared_ada_lin(cond_BD)
    lvl_pos_1LC = model.lvl_embed(model.lvl_1L) + model.pos_1LC
    x_BlC = (cond_BD.unsqueeze(1).expand(rows, first_l, -1) + model.pos_start.expand(rows, first_l, -1)
             + lvl_pos_1LC[:, :first_l])
    f_hat_BChw = torch.zeros(B, Cv, model.patch_nums[-1], model.patch_nums[-1], device=q.device)
    caches = [KVCache() for _ in model.blocks]
    was_training = model.training
    model.eval()
    try:
        for si, pn in enumerate(model.patch_nums):
            logits_BlV = model.head_logits(model.run_blocks(x_BlC, cond, None, caches), cond_BD)
            if guided:
                t = guidance_at(guidance, schedule, si, S)
                logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
            logits_NV = logits_BlV.reshape(-1, V)
            if more_smooth:  # MaskGIT-style soft codes, sharper at later scales, from the filtered logits
                if temperature != 1.0:  # a division by 1 is a full copy of (B·pn², V) for nothing
                    logits_NV = logits_NV / max(temperature, 1e-5)
                filtered_NV = filter_logits(logits_NV, top_k, top_p)
                ids_Bl = draw_tokens(filtered_NV, generator=generator, greedy=greedy, replacement=True,
                                     sampler=sampler).view(B, pn * pn)
                ratio = si / (S - 1)
                tau = max(0.27 * (1 - ratio * 0.95), 0.005)
                soft_BlV = gumbel_softmax(filtered_NV.view(B, pn * pn, V).mul(1 + ratio), tau, generator)
                h_BlC = soft_BlV @ q.embedding.weight.unsqueeze(0)
            else:
                ids_Bl = sample_tokens(logits_NV, temperature=temperature, top_k=top_k, top_p=top_p,
                                       generator=generator, greedy=greedy, replacement=True,
                                       sampler=sampler).view(B, pn * pn)
                h_BlC = q.embedding(ids_Bl)
            h_BChw = h_BlC.transpose(1, 2).reshape(B, Cv, pn, pn)
            f_hat_BChw = f_hat_BChw + q.refine(h_BChw, si)
            yield Stage(si, logits_BlV, ids_Bl, f_hat_BChw)
            if si < S - 1:
                next_BlCv = q.downsample(f_hat_BChw, si + 1).view(B, Cv, -1).transpose(1, 2)
                begin, end = model.scale_ends[si], model.scale_ends[si + 1]
                x_BlC = model.embed_codes(next_BlCv) + lvl_pos_1LC[:, begin:end]
                if guided:  # both halves continue from the same guided reconstruction
                    x_BlC = x_BlC.repeat(2, 1, 1)
    finally:
        model.train(was_training)


def generate(model: VAR, labels_B: Tensor, *, guidance: float = 0.0, schedule: Schedule = "linear", top_k: int = 0,
             top_p: float = 0.0, more_smooth: bool = False, temperature: float = 1.0,
             generator: torch.Generator | None = None, greedy: bool = False, lambda_: float | None = None,
             sampler: Sampler = "official", return_fhat: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``tokens_BL`` (int64, scales concatenated), or ``(tokens_BL, f_hat_BChw)`` with ``return_fhat``.

    ``guidance`` is s (0 = guidance-free, VAR's ``cfg``); ``top_k`` 0 and ``top_p`` 0 or 1 are off
    (VAR's defaults); ``greedy`` takes the most likely filtered token. With ``more_smooth`` the
    image must be decoded from ``f_hat`` (``VQVAE.decode_fhat``), not from the tokens. ``lambda_``
    is the λ of a λ-conditioned model (test-time λ); ``sampler`` the draw (``alignkit.sample.tokens``).
    """
    ids_per_scale, stage = [], None
    for stage in sample_stages(model, labels_B, guidance=guidance, schedule=schedule, top_k=top_k, top_p=top_p,
                               more_smooth=more_smooth, temperature=temperature, generator=generator,
                               greedy=greedy, lambda_=lambda_, sampler=sampler):
        ids_per_scale.append(stage.ids_Bl)
    tokens_BL = torch.cat(ids_per_scale, dim=1)
    return (tokens_BL, stage.f_hat_BChw) if return_fhat else tokens_BL
