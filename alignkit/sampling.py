"""What every backbone's sampler shares: logit filters, the token draw, and guidance schedules.

Conventions (the same for every backbone):
- ``guidance`` is s of the paper's Eq. 2: ``logits = c + s (c − u)``; 0 is guidance-free and then
  the unconditional branch is not evaluated at all. (LlamaGen's official ``cfg_scale`` is 1 + s;
  VAR's ``cfg`` is s.)
- ``top_k`` 0 is off; ``top_p`` in (0, 1) filters, 0 and 1 are off; ``temperature`` divides the
  logits after guidance.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Schedule = Literal["constant", "linear"]


def filter_logits(logits_BV: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Set to −inf every logit outside the top-k (ties at the k-th value survive) and then outside
    the smallest set whose probability reaches ``top_p`` (the token that crosses it is kept, the top
    token always is)."""
    V = logits_BV.shape[-1]
    if top_k > 0:
        kth_B1 = torch.topk(logits_BV, min(top_k, V), dim=-1).values[..., -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_BV, order_BV = torch.sort(logits_BV, dim=-1, descending=True)
        cum_BV = sorted_BV.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted_BV = cum_BV > top_p
        drop_sorted_BV[..., 1:] = drop_sorted_BV[..., :-1].clone()
        drop_sorted_BV[..., 0] = False
        drop_BV = drop_sorted_BV.scatter(-1, order_BV, drop_sorted_BV)
        logits_BV = logits_BV.masked_fill(drop_BV, float("-inf"))
    return logits_BV


def sample_tokens(logits_BV: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                  generator: torch.Generator | None = None, greedy: bool = False,
                  replacement: bool = False) -> Tensor:
    """One token per row (``(B,)`` int64) from filtered, temperature-scaled logits.

    ``replacement`` only selects torch's draw algorithm (both are exact samples): LlamaGen's official
    sampler draws without replacement, VAR's with; matching it reproduces their seeded runs.
    """
    logits_BV = filter_logits(logits_BV / max(temperature, 1e-5), top_k, top_p)
    probs_BV = torch.softmax(logits_BV, dim=-1)
    if greedy:
        return probs_BV.argmax(dim=-1)
    return torch.multinomial(probs_BV, 1, replacement=replacement, generator=generator).squeeze(-1)


def guidance_at(guidance: float, schedule: Schedule, step: int, num_steps: int) -> float:
    """The guidance strength at ``step`` of ``num_steps``: constant, or VAR's linear ramp
    ``s · step / (num_steps − 1)`` (the CCA paper's "CFGv2")."""
    if schedule == "constant":
        return guidance
    if schedule == "linear":
        return guidance * step / max(num_steps - 1, 1)
    raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
