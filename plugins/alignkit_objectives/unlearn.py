"""Unlearning, the CCA paper's likelihood baseline (official ``loss_type == "unlearning"``)."""

from __future__ import annotations

import torch
from torch import Tensor

from alignkit import Objective, ObjectiveOutput, PairLogps
from alignkit_objectives.contrast import ContrastConfig, contrast_loss, resolve_lambda, sample_lambda


class UnlearnConfig(ContrastConfig):
    pass


class Unlearn(Objective):
    """Raise the likelihood of x under c and lower it under c⁻, both relative to the reference::

        L = −mean r(x, c) − mean w · s · r(x, c⁻)

    with (w, s) as in CCA (true negatives: λ, −1), divided by max(λ, 1) when ``normalize``; without
    positive-like rows this is −mean r⁺ + λ mean r⁻. Linear in r, so unbounded below: it only works
    for short runs or small λ, which is the paper's point. (The official LlamaGen script cannot reach
    this branch: its CLI offers "Unlearning" but tests "unlearning".)
    """

    def __init__(self, config: UnlearnConfig, num_classes: int | None = None):
        super().__init__(config)
        self.lambda_ = resolve_lambda(config, num_classes)

    def sample_conditions(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        return sample_lambda(self.config, batch_size, generator)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        loss = contrast_loss(logps, self.lambda_, self.config.same_label, self.config.normalize, lambda r_B: r_B)
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(1.0)})
