"""Training backends: how a run is placed on devices and processes, and optimised.

The trainer drives a backend like this, once per optimiser step::

    for each micro-batch:  logp   = backend.policy_logps(tokens, labels)   # or policy_logits
                           ref    = backend.reference_logps(tokens, labels)
                           backend.backward(loss)           # the micro-batch's mean loss
    stats = backend.step()                                  # clip, update, schedule, zero grads
    ...
    backend.close()                                         # once, when the run ends (also on errors)

Losses are means over a micro-batch; the backend averages gradients over the micro-batches of a step
and over processes, so a step's gradient is that of the mean loss over the global batch.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from alignkit.interfaces.component import ComponentSpec
from alignkit.interfaces.model import PolicyModel, ReferenceModel
from alignkit.logprobs import reduce_logps

if TYPE_CHECKING:
    from alignkit.recipe import Recipe


class NonFiniteError(ArithmeticError):
    """A loss or gradient that is NaN or infinite; the step that produced it was not applied."""


class Backend(ABC):
    """One training placement: processes, devices, precision, optimiser, checkpoint I/O; ``reference``
    is the reference it placed in ``setup``."""

    reference: ReferenceModel | None = None

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
        """Place the models (the reference's ``model``, when it has one), build the optimiser and the schedule."""

    @abstractmethod
    def policy_forward(self, tokens_BL: Tensor, labels_B: Tensor, *, train_mode: bool = True,
                       token_logps: bool = False, **conditions: Tensor) -> Tensor:
        """The policy's forward (with gradients unless disabled by the caller), in train or eval mode,
        under the configured precision: ``logits_BLV``, or with ``token_logps`` the fp32 ``logp_BL``
        (``PolicyModel.forward``); ``conditions`` (``lambda_B``) go to it."""

    def policy_logits(self, tokens_BL: Tensor, labels_B: Tensor, train_mode: bool = True,
                      **conditions: Tensor) -> Tensor:
        return self.policy_forward(tokens_BL, labels_B, train_mode=train_mode, **conditions)

    def policy_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum",
                     **conditions: Tensor) -> Tensor:
        """The policy's ``logp_B`` in train mode, without materialising its logits where the backbone
        allows it."""
        return reduce_logps(self.policy_forward(tokens_BL, labels_B, token_logps=True, **conditions),
                            reduction=reduction)

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

    def refresh_reference(self) -> None:
        """Make the reference the current policy (the end of a self-play round)."""
        self.reference.model.load_state_dict(self.unwrapped_policy().state_dict())

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
        """Release what the backend holds (process groups, …); called once at the end of a run."""


@dataclass(frozen=True)
class BackendSpec(ComponentSpec):
    """``factory(config, *, recipe: Recipe) -> Backend``; ``multi_process`` says whether it runs
    several worker processes (``distributed.num_processes > 1``), which ``alignkit train`` launches."""

    multi_process: bool = False

    kind: ClassVar[str] = "backend"
    builds: ClassVar[type] = Backend
