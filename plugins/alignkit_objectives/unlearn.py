"""Unlearning, the CCA paper's likelihood baseline (official ``loss_type == "unlearning"``)."""

from __future__ import annotations

from alignkit import ObjectiveOutput, PairLogps
from alignkit_objectives.contrast import ContrastConfig, ContrastObjective


class UnlearnConfig(ContrastConfig):
    pass


class Unlearn(ContrastObjective):
    """Raise the likelihood of x under c and lower it under c⁻, both relative to the reference::

        L = −mean r(x, c) − mean w · s · r(x, c⁻)

    with (w, s) as in CCA (true negatives: λ, −1), divided by max(λ, 1) when ``normalize``; without
    positive-like rows this is −mean r⁺ + λ mean r⁻. Linear in r, so unbounded below: it only works
    for short runs or small λ, which is the paper's point. (The official LlamaGen script cannot reach
    this branch: its CLI offers "Unlearning" but tests "unlearning".)
    """

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        loss = self.loss(logps, lambda r_B: r_B)
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(1.0)})
