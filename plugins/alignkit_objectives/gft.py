"""Guidance-Free Training (Chen, Jiang, Zheng, Chen, Su, Zhu 2025, "Visual Generation Without
Guidance", arXiv 2501.15420; official code: thu-ml/GFT, ``LlamaGen/autoregressive/train/GFT_c2i.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from alignkit import ComponentConfig, Objective, ObjectiveOutput, Pairs
from alignkit.interfaces import TokenLogits


class GFTConfig(ComponentConfig):
    beta: float = Field(0.1, gt=0, le=1, description="β of the mix (official default 0.1); the model then samples "
                        "without guidance like CFG with s = 1/β − 1")
    beta_range: tuple[float, float] | None = Field(
        None, description="the β-input variant: every row draws β uniformly from [low, high] (official: (0, 1)), the "
        "policy is conditioned on λ = 1/β (needs model.lambda_conditioning = true) and β is chosen at sampling time "
        "with --lambda 1/β; beta is then unused")

    @model_validator(mode="after")
    def _range_in_unit_interval(self):
        if self.beta_range is not None and not 0 < self.beta_range[0] < self.beta_range[1] <= 1:
            raise ValueError(f"beta_range must be [low, high] with 0 < low < high <= 1, got {list(self.beta_range)}")
        return self


class GFT(Objective):
    """GFT's AR objective: next-token cross-entropy of the data under mixed logits (the paper's Eq. 8
    in logit form, official ``GFT_c2i.py``)::

        ℓ_mix = β · ℓ_θ(x|c) + (1 − β) · sg(ℓ_θ(x|∅)),     L = −mean_t log softmax(ℓ_mix)[x_t]

    with ``sg`` a stop-gradient: ℓ_θ(x|∅) is a no-gradient forward of the same model under the null
    class (without dropout, as the official β-input trainer runs it). Null-class rows (the sampler's
    ``uncond_ratio``, 10% as in pretraining) keep the unconditional model trained. At β = 1 this is the
    MLE objective. The mix is fitted to the data, so the trained conditional model is
    ℓ_θ(x|c) = ℓ_∅ + (ℓ_data(x|c) − ℓ_∅)/β: it samples alone like CFG with s = 1/β − 1.

    β-input variant (``beta_range``): each row draws β and the policy is conditioned on λ = 1/β through
    the test-time-λ embedding (the official code embeds β·1000 with a DiT timestep embedder; λ = 1/β
    is the same information, so one sampling flag serves CCA's λ and GFT's β). As officially,
    null-class rows are conditioned on β = 1 and mixed with their drawn β; the stop-gradient branch is
    conditioned on β = 1.
    """

    config: GFTConfig

    @property
    def conditions(self) -> tuple[str, ...]:
        return ("lambda_B", "beta_B") if self.config.beta_range is not None else ()

    def sample_conditions(self, pairs: Pairs, generator: torch.Generator) -> dict[str, Tensor]:
        if self.config.beta_range is None:
            return {}
        low, high = self.config.beta_range
        beta_B = low + (high - low) * torch.rand(pairs.labels_pos_B.shape[0], generator=generator)
        lambda_B = torch.where(pairs.uncond_B.cpu(), 1.0, 1.0 / beta_B)
        return {"lambda_B": lambda_B, "beta_B": beta_B}

    def __call__(self, batch: TokenLogits) -> ObjectiveOutput:
        cond_BLV, uncond_BLV = batch.logits["cond"], batch.logits["uncond"]
        beta = batch.conditions["beta_B"].to(cond_BLV).view(-1, 1, 1) if "beta_B" in batch.conditions \
            else self.config.beta
        mixed_BLV = beta * cond_BLV + (1 - beta) * uncond_BLV.detach()
        targets_N = batch.tokens_BL.reshape(-1)
        loss = F.cross_entropy(mixed_BLV.reshape(-1, mixed_BLV.shape[-1]), targets_N)
        with torch.no_grad():
            metrics = {"loss": loss.detach(),
                       "loss/cond": F.cross_entropy(cond_BLV.reshape(-1, cond_BLV.shape[-1]), targets_N),
                       "loss/uncond": F.cross_entropy(uncond_BLV.reshape(-1, uncond_BLV.shape[-1]), targets_N)}
        return ObjectiveOutput(loss, metrics)
