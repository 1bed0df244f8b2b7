"""Per-row weights and signs shared by the λ-weighted contrastive objectives (CCA, Unlearning)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from alignkit import ComponentConfig, Pairs


class ContrastConfig(ComponentConfig):
    lambda_: float | None = Field(
        None, gt=0, description="λ, the weight of the negative term. Unset: num_classes / 10 (ImageNet: 100), "
        "because the optimum r* = log p(c|x) + log(|C| / λ) only depends on λ through |C| / λ")
    normalize: bool = Field(True, description="divide the loss by max(λ, 1), as the official trainers do with "
                            "uncond_ratio > 0; keeps the gradient scale independent of λ")
    same_label: Literal["positive", "negative"] = Field(
        "positive", description="how rows whose negative label equals their label count: 'positive' (official with "
        "uncond_ratio > 0) or 'negative' (official 'simplified' path with uncond_ratio = 0, and the paper's Eq.)")


def resolve_lambda(config: ContrastConfig, num_classes: int | None) -> float:
    if config.lambda_ is not None:
        return config.lambda_
    if num_classes is None:
        raise ValueError("lambda_ is unset and the number of classes is unknown; set objective.lambda_")
    return num_classes / 10


def contrast_weights(pairs: Pairs, lambda_: float, same_label: str) -> tuple[Tensor, Tensor]:
    """``(w_B, s_B)``: weight 1 and sign +1 for rows trained as positives, (λ, −1) for true negatives.

    Null-class rows are always positives (CCA+CFG keeps the unconditional model by likelihood);
    label collisions follow ``same_label``.
    """
    as_pos_B = pairs.neg_is_pos_B if same_label == "positive" else pairs.uncond_B
    w_B = torch.where(as_pos_B, 1.0, lambda_)
    s_B = torch.where(as_pos_B, 1.0, -1.0)
    return w_B, s_B
