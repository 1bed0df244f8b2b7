"""Sequence log-probabilities: the one place where logits become the numbers every objective uses."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def sequence_logps(logits_BLV: Tensor, tokens_BL: Tensor, mask_BL: Tensor | None = None,
                   reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """``logp_B = Σ_i log softmax(logits_BLV[:, i])[tokens_BL[:, i]]`` in float32.

    As in the official CCA code, every image token counts (``mask_BL`` may drop some) and the sum is
    not length-normalised; ``reduction="mean"`` divides by the number of counted tokens for
    objectives that ask for it.
    """
    if logits_BLV.shape[:2] != tokens_BL.shape:
        raise ValueError(f"logits {tuple(logits_BLV.shape)} do not match tokens {tuple(tokens_BL.shape)}")
    logp_BLV = torch.log_softmax(logits_BLV.float(), dim=-1)
    logp_BL = torch.gather(logp_BLV, dim=2, index=tokens_BL.long().unsqueeze(2)).squeeze(2)
    if mask_BL is not None:
        logp_BL = logp_BL * mask_BL.to(logp_BL.dtype)
    logp_B = logp_BL.sum(-1)
    if reduction == "mean":
        count_B = mask_BL.sum(-1).clamp_min(1) if mask_BL is not None else logp_BL.shape[1]
        logp_B = logp_B / count_B
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return logp_B
