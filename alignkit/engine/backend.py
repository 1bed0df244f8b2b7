"""How a run is placed on devices and optimised. Backends are plugins (``alignkit_register_backends``).

The trainer drives a backend like this, once per optimiser step::

    for each micro-batch:  logits = backend.policy_logits(tokens, labels)
                           ref    = backend.reference_logps(tokens, labels)
                           backend.backward(loss)           # the micro-batch's mean loss
    stats = backend.step()                                  # clip, update, schedule, zero grads

Losses are means over a micro-batch; the backend averages gradients over the micro-batches of a step
and over processes, so a step's gradient is that of the mean loss over the global batch.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignkit.interfaces import PolicyModel, ReferenceModel
from alignkit.recipe import OptimSection, Recipe


class Backend(ABC):
    """One training placement: processes, devices, precision, optimiser, checkpoint I/O."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def setup(self, policy: PolicyModel, reference: ReferenceModel | None, accumulation_steps: int,
              total_steps: int) -> None:
        """Place the models, build the optimiser (``param_groups``) and the schedule (``lr_factor``)."""

    @abstractmethod
    def policy_logits(self, tokens_BL: Tensor, labels_B: Tensor, **conditions: Tensor) -> Tensor:
        """The policy's ``logits_BLV`` with gradients, under the configured precision (``conditions``,
        e.g. ``lambda_B``, go to its forward)."""

    @abstractmethod
    def reference_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        """The reference's ``logp_B`` (no gradients)."""

    @abstractmethod
    def backward(self, loss: Tensor) -> None:
        """Accumulate gradients of one micro-batch's loss."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """Finish an optimiser step; returns at least ``lr`` and ``grad_norm`` (before clipping)."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write model, optimiser and schedule state into ``folder`` (already created, private to
        this checkpoint; the caller makes it visible atomically)."""

    @abstractmethod
    def load(self, folder: Path) -> None:
        """Restore what ``save`` wrote."""

    @abstractmethod
    def unwrapped_policy(self) -> PolicyModel:
        """The ``PolicyModel`` itself (for export and sampling)."""

    @abstractmethod
    def export_state_dict(self) -> dict[str, Tensor] | None:
        """The policy's full ``official_state_dict`` on the main process (gathered if sharded), else None."""

    def parameter_distance(self) -> float | None:
        """max |θ − θ_ref| over parameters, when the backend can tell (None otherwise)."""
        return None

    def all_reduce_mean(self, tensor: Tensor) -> Tensor:
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        return tensor

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


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


class NonFiniteError(ArithmeticError):
    """A loss or gradient that is NaN or infinite; the step that produced it was not applied."""
