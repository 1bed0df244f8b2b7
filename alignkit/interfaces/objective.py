"""Objectives: a loss and its metrics from the summed sequence log-probs of one micro-batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from alignkit.interfaces.component import ComponentConfig, ComponentSpec
from alignkit.interfaces.pairs import Pairs

if TYPE_CHECKING:
    from alignkit.interfaces.model import PolicyModel


OLD_NAMES = {"rewards/chosen": "rewards/pos", "rewards/rejected": "rewards/neg", "logps/chosen": "logps/pos",
             "logps/rejected": "logps/neg"}
"""The metric names before TRL's, still logged for one release."""


@dataclass(frozen=True)
class PairLogps:
    """Summed sequence log-probs of policy and reference under the positive and negative conditions.

    Every tensor is ``(B,)`` float32. ``ref_*`` are ``None`` for reference-free objectives and
    ``*_neg_B`` are ``None`` for objectives that need no negatives.
    """

    pairs: Pairs
    policy_pos_B: Tensor
    policy_neg_B: Tensor | None = None
    ref_pos_B: Tensor | None = None
    ref_neg_B: Tensor | None = None
    conditions: dict[str, Tensor] = field(default_factory=dict)
    """What the objective's ``sample_conditions`` drew for these rows (e.g. ``lambda_B``)."""

    @property
    def r_pos_B(self) -> Tensor:
        """r(x, c) = log p_θ(x|c) − log p_ref(x|c)."""
        return self.policy_pos_B - _require(self.ref_pos_B, "ref_pos_B")

    @property
    def r_neg_B(self) -> Tensor:
        """r(x, c⁻) = log p_θ(x|c⁻) − log p_ref(x|c⁻)."""
        return _require(self.policy_neg_B, "policy_neg_B") - _require(self.ref_neg_B, "ref_neg_B")

    def reward_metrics(self, beta: float) -> dict[str, Tensor]:
        """TRL's metrics: rewards are β·r, log-probs the policy's summed log-probs; the positive
        condition is TRL's ``chosen``, the negative its ``rejected`` (``*/pos``, ``*/neg``: aliases for
        one release)."""
        with torch.no_grad():
            r_pos_B = self.r_pos_B.detach()
            metrics = {"rewards/chosen": beta * r_pos_B.mean(), "logps/chosen": self.policy_pos_B.detach().mean()}
            if self.policy_neg_B is not None:
                r_neg_B = self.r_neg_B.detach()
                metrics["rewards/rejected"] = beta * r_neg_B.mean()
                metrics["rewards/margins"] = beta * (r_pos_B - r_neg_B).mean()
                metrics["rewards/accuracies"] = (r_pos_B > r_neg_B).float().mean()
                metrics["logps/rejected"] = self.policy_neg_B.detach().mean()
        return {**metrics, **{old: metrics[new] for new, old in OLD_NAMES.items() if new in metrics}}


def _require(value: Tensor | None, name: str) -> Tensor:
    if value is None:
        raise ValueError(f"PairLogps.{name} is required by this objective but was not computed")
    return value


@dataclass
class ObjectiveOutput:
    """A scalar loss to minimise and detached scalar metrics (stable names, see ``Objective``)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(ABC):
    """A training objective: a small pure function of ``PairLogps``.

    Subclasses cite their equation in the docstring and return ``ObjectiveOutput`` with at least
    these metrics (TRL's names, ``PairLogps.reward_metrics``): ``loss``, ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``,
    ``logps/rejected`` (the last five only when negatives are used). What a step must compute for it is declared on its ``ObjectiveSpec``.
    """

    def __init__(self, config: ComponentConfig):
        self.config = config

    def setup(self, policy: PolicyModel) -> None:
        """Called once with the built policy before the first step (e.g. to read ``num_classes``)."""

    @property
    def conditions(self) -> tuple[str, ...]:
        """Names of the per-row inputs ``sample_conditions`` draws (``("lambda_B",)`` for test-time λ)."""
        return ()

    def sample_conditions(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Per-row inputs the policy is conditioned on during training, drawn before its forward pass
        from the pair sampler's generator; they reach ``__call__`` in ``logps.conditions``."""
        return {}

    @abstractmethod
    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        """The loss for one (micro-)batch."""


@dataclass(frozen=True)
class ObjectiveSpec(ComponentSpec):
    """``factory(config) -> Objective``, and what a training step must compute for it.

    - ``needs_reference``: reference log-probs (``ref_pos_B``/``ref_neg_B``) are computed;
    - ``needs_negatives``: the policy (and reference) also run under the negative condition;
    - ``trains_null``: null-class rows are trained, so ``sampler.uncond_ratio`` must be > 0;
    - ``default_uncond_ratio``: the sampler's ratio when a recipe does not set it;
    - ``logp_reduction``: token log-probs are summed per sequence, or averaged (length-normalised).
    """

    needs_reference: bool = True
    needs_negatives: bool = True
    trains_null: bool = False
    default_uncond_ratio: float = 0.0
    logp_reduction: Literal["sum", "mean"] = "sum"

    kind: ClassVar[str] = "objective"
    builds: ClassVar[type] = Objective
