"""Noise Contrastive Alignment (Chen et al. 2024, "Noise Contrastive Alignment of Language Models
with Explicit Rewards"), the pairwise form TRL calls ``nca_pair``."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from alignkit import ComponentConfig, Objective, ObjectiveOutput, PairLogps


class NCAConfig(ComponentConfig):
    beta: float = Field(0.02, gt=0, description="β, the scale of r = log p_θ − log p_ref")


class NCA(Objective):
    """NCA with (x | c) as the winner and (x | c⁻) as the loser::

        L = −mean [ log σ(β r⁺) + ½ log σ(−β r⁺) + ½ log σ(−β r⁻) ]

    Unlike DPO it fixes the absolute rewards, not only their margin (the CCA paper's Appendix links
    CCA to this family).
    """

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        beta = self.config.beta
        r_pos_B, r_neg_B = logps.r_pos_B, logps.r_neg_B
        loss_B = (-F.logsigmoid(beta * r_pos_B) - 0.5 * F.logsigmoid(-beta * r_pos_B)
                  - 0.5 * F.logsigmoid(-beta * r_neg_B))
        loss = loss_B.mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(beta)})
