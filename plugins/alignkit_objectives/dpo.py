"""Direct Preference Optimization (Rafailov et al. 2023), as the CCA paper applies it to conditions."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from alignkit import ComponentConfig, Objective, ObjectiveOutput, PairLogps


class DPOConfig(ComponentConfig):
    beta: float = Field(0.1, gt=0, description="β of DPO (TRL's default 0.1)")


class DPO(Objective):
    """DPO with (x | c) preferred over (x | c⁻), Eq. 7 of the DPO paper::

        L = −mean log σ(β (r(x, c) − r(x, c⁻)))

    Only the margin is constrained, so both likelihoods may fall (the collapse the CCA paper reports).
    """

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        beta = self.config.beta
        loss = -F.logsigmoid(beta * (logps.r_pos_B - logps.r_neg_B)).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(beta)})
