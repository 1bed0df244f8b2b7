"""What the λ-weighted contrastive objectives (CCA, Unlearning) share: their options, the default λ,
test-time λ, and per-row weights and signs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from alignkit import ComponentConfig, Objective, PairLogps, Pairs, PolicyModel
from alignkit_conditioning import log_uniform


class ContrastConfig(ComponentConfig):
    lambda_: float | None = Field(
        None, gt=0, description="λ, the weight of the negative term. Unset: num_classes / 10 (ImageNet: 100), "
        "because the optimum r* = log p(c|x) + log(|C| / λ) only depends on λ through |C| / λ")
    normalize: bool = Field(True, description="divide the loss by max(λ, 1), as the official trainers do with "
                            "uncond_ratio > 0; keeps the gradient scale independent of λ")
    lambda_range: tuple[float, float] | None = Field(
        None, description="test-time λ (paper App. E): each row draws λ log-uniformly from this range, the policy "
        "is conditioned on it (needs model.lambda_conditioning = true) and lambda_ is unused; the paper uses "
        "[1, 1e4] on ImageNet")
    same_label: Literal["positive", "negative"] = Field(
        "positive", description="how rows whose negative label equals their label count: 'positive' (official with "
        "uncond_ratio > 0) or 'negative' (official 'simplified' path with uncond_ratio = 0, and the paper's Eq.)")

    @model_validator(mode="after")
    def _range_is_ordered(self):
        if self.lambda_range is not None and not 0 < self.lambda_range[0] < self.lambda_range[1]:
            raise ValueError(f"lambda_range must be [low, high] with 0 < low < high, got {list(self.lambda_range)}")
        return self


class ContrastObjective(Objective):
    """Base of CCA and Unlearning: resolves λ against the policy's classes and draws test-time λ."""

    config: ContrastConfig

    def __init__(self, config: ContrastConfig):
        super().__init__(config)
        self.lambda_ = resolve_lambda(config, None)  # None until setup() knows the number of classes

    def setup(self, policy: PolicyModel) -> None:
        self.lambda_ = resolve_lambda(self.config, policy.num_classes)

    @property
    def conditions(self) -> tuple[str, ...]:
        return ("lambda_B",) if self.config.lambda_range is not None else ()

    def sample_conditions(self, pairs: Pairs, generator: torch.Generator) -> dict[str, Tensor]:
        """``{"lambda_B": …}`` drawn log-uniformly from ``lambda_range``, or nothing without one."""
        if self.config.lambda_range is None:
            return {}
        low, high = self.config.lambda_range
        return {"lambda_B": log_uniform(pairs.labels_pos_B.shape[0], low, high, generator)}

    def loss(self, logps: PairLogps, term: Callable[[Tensor], Tensor]) -> Tensor:
        if self.lambda_ is None:
            raise RuntimeError(f"{type(self).__name__}.setup(policy) must run before the first step (it resolves λ)")
        return contrast_loss(logps, self.lambda_, self.config.same_label, self.config.normalize, term)


def contrast_loss(logps: PairLogps, lambda_: float, same_label: str, normalize: bool,
                  term: Callable[[Tensor], Tensor]) -> Tensor:
    """``mean(−term(r⁺) − w·term(s·r⁻))``, / max(λ, 1) when ``normalize``: CCA with ``term = log σ(β·)``,
    Unlearning with the identity. With test-time λ (``logps.conditions["lambda_B"]``) every row has
    its own λ and its own max(λ, 1)."""
    lambda_B = logps.conditions.get("lambda_B")
    w_B, s_B = contrast_weights(logps.pairs, lambda_ if lambda_B is None else lambda_B, same_label)
    w_B, s_B = w_B.to(logps.r_pos_B), s_B.to(logps.r_pos_B)
    if lambda_B is None:  # the official expression, term for term
        loss = -term(logps.r_pos_B).mean() - (w_B * term(s_B * logps.r_neg_B)).mean()
        return loss / max(lambda_, 1.0) if normalize else loss
    loss_B = -term(logps.r_pos_B) - w_B * term(s_B * logps.r_neg_B)
    if normalize:
        loss_B = loss_B / lambda_B.to(loss_B).clamp(min=1.0)
    return loss_B.mean()


def resolve_lambda(config: ContrastConfig, num_classes: int | None) -> float | None:
    """``lambda_``; unset: the geometric middle of ``lambda_range``, else ``num_classes / 10`` (``None``
    while the number of classes is unknown)."""
    if config.lambda_ is not None:
        return config.lambda_
    if config.lambda_range is not None:  # only used for rows that come without their own λ
        return math.sqrt(config.lambda_range[0] * config.lambda_range[1])
    return None if num_classes is None else num_classes / 10


def contrast_weights(pairs: Pairs, lambda_: float | Tensor, same_label: str) -> tuple[Tensor, Tensor]:
    """``(w_B, s_B)``: weight 1 and sign +1 for rows trained as positives, (λ, −1) for true negatives.

    Null-class rows are always positives (CCA+CFG keeps the unconditional model by likelihood);
    label collisions follow ``same_label``.
    """
    as_pos_B = pairs.neg_is_pos_B if same_label == "positive" else pairs.uncond_B
    lambda_ = lambda_.to(as_pos_B.device) if isinstance(lambda_, Tensor) else lambda_
    w_B = torch.where(as_pos_B, 1.0, lambda_)
    s_B = torch.where(as_pos_B, 1.0, -1.0)
    return w_B, s_B
