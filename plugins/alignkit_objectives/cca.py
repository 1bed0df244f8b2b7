"""Condition Contrastive Alignment (Chen et al., "Toward Guidance-Free AR Visual Generation via
Condition Contrastive Alignment", 2024)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from alignkit import Objective, ObjectiveOutput, PairLogps
from alignkit_objectives.contrast import ContrastConfig, contrast_loss, resolve_lambda, sample_lambda


class CCAConfig(ContrastConfig):
    beta: float = Field(0.02, gt=0, description="β, the scale of r = log p_θ − log p_ref (paper: 0.02)")


class CCA(Objective):
    """CCA, the paper's Eq. 12 with r(x, c) = log p_θ(x|c) − log p_ref(x|c)::

        L = −mean log σ(β r(x, c)) − mean w · log σ(s · β r(x, c⁻))

    with (w, s) = (λ, −1) for true negatives and (1, +1) for rows trained as positives (null-class
    rows, and collisions c⁻ = c when ``same_label = "positive"``), divided by max(λ, 1) when
    ``normalize``. With no such rows this is −log σ(β r⁺) − λ log σ(−β r⁻), whose optimum is
    r* = log p(x|c)/p(x) − log λ (Theorem B.1). With ``lambda_range`` (test-time λ, Appendix E) each
    row draws its own λ and the policy is conditioned on it.
    """

    def __init__(self, config: CCAConfig, num_classes: int | None = None):
        super().__init__(config)
        self.lambda_ = resolve_lambda(config, num_classes)

    def sample_conditions(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        return sample_lambda(self.config, batch_size, generator)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        beta = self.config.beta
        loss = contrast_loss(logps, self.lambda_, self.config.same_label, self.config.normalize,
                             lambda r_B: F.logsigmoid(beta * r_B))
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(beta)})


class CCACFG(CCA):
    """CCA+CFG: CCA where a share of rows (``uncond_ratio``, default 0.1) is relabelled to the null
    class and trained as positives, so the unconditional model stays usable for guidance after
    alignment. Same equation as ``CCA``."""

    uses_uncond: ClassVar[bool] = True
    default_uncond_ratio: ClassVar[float] = 0.1
