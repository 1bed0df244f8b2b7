"""Maximum likelihood with label dropout: how class-conditional AR models are pretrained."""

from __future__ import annotations

from typing import ClassVar, Literal

from alignkit import Objective, ObjectiveOutput, PairLogps
from alignkit.interfaces import ComponentConfig


class MLEConfig(ComponentConfig):
    pass


class MLE(Objective):
    """Token-level cross-entropy of x under its (possibly dropped) label, as in LlamaGen and VAR
    pretraining::

        L = −mean_i (1/L) Σ_t log p_θ(x_t | x_<t, c_i)

    The pair sampler's ``uncond_ratio`` (default 0.1) relabels rows to the null class: that is the
    label dropout that makes classifier-free guidance possible later. No reference, no negatives.
    """

    needs_reference: ClassVar[bool] = False
    needs_negatives: ClassVar[bool] = False
    uses_uncond: ClassVar[bool] = True
    default_uncond_ratio: ClassVar[float] = 0.1
    logp_reduction: ClassVar[Literal["sum", "mean"]] = "mean"

    def __init__(self, config: MLEConfig, num_classes: int | None = None):
        super().__init__(config)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        loss = -logps.policy_pos_B.mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "logps/pos": logps.policy_pos_B.detach().mean()})
