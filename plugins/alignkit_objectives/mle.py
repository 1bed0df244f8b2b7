"""Maximum likelihood with label dropout: how class-conditional AR models are pretrained."""

from __future__ import annotations

from alignkit import ComponentConfig, Objective, ObjectiveOutput, PairLogps


class MLEConfig(ComponentConfig):
    pass


class MLE(Objective):
    """Token-level cross-entropy of x under its (possibly dropped) label, as in LlamaGen and VAR
    pretraining::

        L = −mean_i (1/L) Σ_t log p_θ(x_t | x_<t, c_i)

    The pair sampler's ``uncond_ratio`` (default 0.1) relabels rows to the null class: that is the
    label dropout that makes classifier-free guidance possible later. No reference, no negatives,
    per-token mean log-probs (its spec says so).
    """

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        loss = -logps.policy_pos_B.mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "logps/pos": logps.policy_pos_B.detach().mean()})
