"""Condition Contrastive Alignment (Chen et al., "Toward Guidance-Free AR Visual Generation via
Condition Contrastive Alignment", 2024)."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from alignkit import ObjectiveOutput, PairLogps
from alignkit_objectives.contrast import ContrastConfig, ContrastObjective


class CCAConfig(ContrastConfig):
    beta: float = Field(0.02, gt=0, description="β, the scale of r = log p_θ − log p_ref (paper: 0.02)")


class CCA(ContrastObjective):
    """CCA, the paper's Eq. 12 with r(x, c) = log p_θ(x|c) − log p_ref(x|c)::

        L = −mean log σ(β r(x, c)) − mean w · log σ(s · β r(x, c⁻))

    with (w, s) = (λ, −1) for true negatives and (1, +1) for rows trained as positives (null-class
    rows, and collisions c⁻ = c when ``same_label = "positive"``), divided by max(λ, 1) when
    ``normalize``. With no such rows this is −log σ(β r⁺) − λ log σ(−β r⁻), whose optimum is
    r* = log p(x|c)/p(x) − log λ (Theorem B.1). With ``lambda_range`` (test-time λ, Appendix E) each
    row draws its own λ and the policy is conditioned on it. Registered twice: ``cca``, and
    ``cca_cfg`` (CCA+CFG), whose spec trains the 10% null-class rows as positives so that CFG still
    works after alignment.
    """

    config: CCAConfig

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        beta = self.config.beta
        loss = self.loss(logps, lambda r_B: F.logsigmoid(beta * r_B))
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(beta)})
