"""KV-cached sampling with classifier-free guidance, in the paper's convention.

``guidance`` is s of CCA's Eq. 2, ``logits = c + s (c − u)``; LlamaGen's ``cfg_scale`` is 1 + s, and
the mixture is computed exactly as the official ``uncond + (cond − uncond) · cfg_scale`` on the raw
logits (temperature and filters come after), so that sequences match the official sampler bit for
bit. With ``guidance == 0`` the unconditional branch is never evaluated: the batch is not doubled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alignkit_conditioning import lambda_rows
from alignkit.errors import AlignkitError
from alignkit.sample.tokens import Sampler, Schedule, guidance_at, sample_tokens
from alignkit_llamagen.layers import KVCache

if TYPE_CHECKING:
    from alignkit_llamagen.model import LlamaGenGPT


def _guided_at(token: int, cfg_interval: int) -> bool:
    """Whether image token ``token`` is drawn from guided logits under the official ``cfg_interval``:
    the class-token step always is; decode step ``i`` (producing token ``i + 1``) only while
    ``i <= cfg_interval``; ``cfg_interval < 0`` guides every token."""
    return cfg_interval < 0 or token - 1 <= cfg_interval


def generate_tokens(model: LlamaGenGPT, labels_B: Tensor, *, guidance: float = 0.0, top_k: int = 0,
                    top_p: float = 1.0, temperature: float = 1.0, cfg_interval: int = -1,
                    generator: torch.Generator | None = None, schedule: Schedule = "constant",
                    greedy: bool = False, lambda_: float | None = None, sampler: Sampler = "official") -> Tensor:
    """``tokens_BL`` int64 on the model's device, sampled token by token in raster order.

    - ``guidance`` s (0 = guidance-free); ``schedule="linear"`` ramps it over token positions
      (``guidance_at``); ``cfg_interval`` as the official sampler (see ``_guided_at``). Once guidance
      has ended the unconditional rows are dropped from the cache and no longer computed.
    - ``top_k`` (0 = off), ``top_p`` (in (0, 1) filters; 0 and 1 are off), ``temperature`` applied after
      guidance; ``greedy`` takes the argmax instead of drawing.
    - ``lambda_``: the λ of a λ-conditioned model (test-time λ), for every row.
    - Exactly one ``torch.multinomial`` draw per token from ``generator`` (the global CPU generator
      when ``None``), as the official sampler: a seeded generator reproduces its seeded runs.
      ``sampler="inverse_cdf"`` draws from the same distribution with other random numbers
      (``alignkit.sample.tokens``).

    The model runs in eval mode (its previous mode is restored) without autograd; the
    cache exists only during the call.
    """
    config = model.config
    device = model.tok_embeddings.weight.device
    labels_B = labels_B.to(device=device, dtype=torch.int64).reshape(-1)
    if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) > model.null_label):
        raise AlignkitError(f"labels span [{int(labels_B.min())}, {int(labels_B.max())}], the model has "
                            f"{model.num_classes} classes (null class {model.null_label})")
    B, L = labels_B.shape[0], model.seq_len
    guided = guidance != 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if guided:
                labels_B = torch.cat([labels_B, torch.full_like(labels_B, model.null_label)])
            # cls_token_num + L - 1 positions: the last image token is never fed back.
            cache = KVCache(config, labels_B.shape[0], config.cls_token_num + L - 1,
                            model.tok_embeddings.weight.dtype, device)
            tokens_BL = torch.empty(B, L, dtype=torch.int64, device=device)
            for t in range(L):
                guide = guided and _guided_at(t, cfg_interval)
                if guided and not guide and cache.rows == 2 * B:
                    cache.keep_rows(B)
                if t == 0:
                    h_R1D = model.class_tokens(labels_B, lambda_rows(lambda_, labels_B.shape[0], device))
                else:
                    h_B1D = model.tok_embeddings(tokens_BL[:, t - 1:t])
                    h_R1D = torch.cat([h_B1D, h_B1D]) if cache.rows == 2 * B else h_B1D
                logits_RV = model.decode_step(h_R1D, cache)
                if guide:
                    cond_BV, uncond_BV = logits_RV[:B], logits_RV[B:]
                    cfg_scale = 1.0 + guidance_at(guidance, schedule, t, L)
                    logits_BV = uncond_BV + (cond_BV - uncond_BV) * cfg_scale
                else:
                    logits_BV = logits_RV[:B]
                tokens_BL[:, t] = sample_tokens(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p,
                                                generator=generator, greedy=greedy, replacement=False, sampler=sampler)
    finally:
        model.train(was_training)
    return tokens_BL
