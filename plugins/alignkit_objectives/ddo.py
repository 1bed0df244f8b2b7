"""Direct Discriminative Optimization (Zheng, Chen, Chen, He, Liu, Zhu, Zhang, ICML 2025, "Direct
Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN
Discriminator", arXiv 2503.01103)."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from alignkit import ObjectiveOutput, PairLogps
from alignkit.interfaces import GenerationConfig, Objective


class DDOConfig(GenerationConfig):
    beta: float = Field(0.02, gt=0, description="β, the scale of r = log p_θ − log p_ref (the paper's VAR value 0.02)")
    alpha: float = Field(1.0, gt=0, description="α, the weight of the generated negatives (the paper grid-searches "
                         "10–100 per round on VAR)")


class DDO(Objective):
    """DDO, the paper's generalised objective (Eq. 9) for an AR model, whose log-likelihood is the sum
    of its token log-probs::

        L = −mean log σ(β r(x, c)) − α · mean log(1 − σ(β r(x̃, c))),   x ~ data,  x̃ ~ p_ref(·|c)

    with r = log p_θ − log p_ref summed over the image tokens. The implicit discriminator
    σ(β log p_θ/p_ref) separates real images from the reference's own samples; the optimum is
    p_θ ∝ p_ref^(1−1/β) · p_data^(1/β), sharper than the data for β < 1, like guidance. Self-play
    rounds (``round_steps``): after each, the reference becomes the current policy and generates
    the next round's negatives. Label dropout is kept (the 10% null rows contrast real images with
    unconditional samples), so CFG still works afterwards, as in the paper's VAR runs.
    """

    config: DDOConfig

    def __call__(self, batch: PairLogps) -> ObjectiveOutput:
        beta = self.config.beta
        loss = -F.logsigmoid(beta * batch.r_pos_B).mean() - self.config.alpha * F.logsigmoid(-beta * batch.r_neg_B).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), **batch.reward_metrics(beta)})
