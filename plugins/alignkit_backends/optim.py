"""What optimiser-owning backends share: AdamW parameter groups, the learning-rate schedule, mixed precision."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from alignkit.interfaces import PolicyModel
from alignkit.recipe import OptimSection


def param_groups(policy: PolicyModel, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with the backbone's official decay rule (``PolicyModel.decays``)."""
    decay, no_decay = [], []
    for name, param in policy.named_parameters():
        if param.requires_grad:
            (decay if policy.decays(name, param) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(optim: OptimSection, total_steps: int) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` after ``step`` optimiser steps: linear warm-up from 0, then constant,
    linear or cosine decay to ``optim.final_lr_ratio``."""
    warmup, final = optim.warmup_steps, optim.final_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if optim.schedule == "linear":
            return 1.0 - (1.0 - final) * progress
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def autocast(device: torch.device, precision: str):
    """bf16 autocast with fp32 master weights (the official CCA precision), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)
