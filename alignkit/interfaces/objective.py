"""Objectives: a loss and its metrics from what the engine computes for one micro-batch.

An objective's spec declares which of three kinds of input it takes (``ObjectiveSpec.inputs``):

- ``pair_logps``: summed sequence log-probs of policy and reference for (x, c⁺) and (x, c⁻)
  (``PairLogps``; CCA, DPO, Unlearning, NCA, MLE);
- ``token_logits``: the policy's token logits for the batch's images under the conditions the spec's
  ``logits`` requests name (``TokenLogits``; GFT mixes two of them before the softmax);
- ``generated_pairs``: ``PairLogps`` in which the negative of each row is an image the reference
  generated for the row's own condition, x̃ ~ p_ref(·|c), and the reference becomes the policy every
  ``round_steps`` optimiser steps (self-play rounds; DDO). The config subclasses ``GenerationConfig``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from alignkit.interfaces.component import ComponentConfig, ComponentSpec
from alignkit.interfaces.pairs import Pairs

if TYPE_CHECKING:
    from alignkit.interfaces.model import PolicyModel


POLICY_CONDITIONS = ("lambda_B",)
"""The per-row conditions a policy's forward takes; other draws of ``sample_conditions`` stay with the objective."""
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


@dataclass(frozen=True)
class LogitsRequest:
    """One forward pass of the policy over the batch's images that a ``token_logits`` objective needs.

    ``condition``: the rows' (possibly null-masked) labels, their negative labels, or the null class
    for every row. ``grad``: whether gradients flow (a stop-gradient branch does not). ``train_mode``:
    dropout on or off. ``lambda_``: a λ for every row of this forward instead of the drawn per-row
    conditions (only for models that take λ).
    """

    condition: Literal["label", "negative", "null"] = "label"
    grad: bool = True
    train_mode: bool = True
    lambda_: float | None = None


@dataclass(frozen=True)
class TokenLogits:
    """What a ``token_logits`` objective receives: ``logits[name]`` is ``logits_BLV`` (float32) of the
    request ``name`` of its spec, for ``tokens_BL``."""

    pairs: Pairs
    tokens_BL: Tensor
    logits: dict[str, Tensor]
    conditions: dict[str, Tensor] = field(default_factory=dict)


class GenerationConfig(ComponentConfig):
    """Options of an objective whose negatives the reference generates (``inputs = "generated_pairs"``)."""

    round_steps: int = Field(500, gt=0, description="optimiser steps per self-play round; after each, the reference "
                             "becomes the current policy and generates the next round's negatives")
    guidance: float = Field(0.0, description="guidance s of the negatives' sampler (0: the reference's own "
                            "distribution, as the method requires)")
    sampling: dict[str, Any] = Field(default_factory=dict, description="the backbone's sampling options for the "
                                     "negatives (top_k, temperature, …; unset: the backbone's defaults)")


@dataclass
class ObjectiveOutput:
    """A scalar loss to minimise and detached scalar metrics (stable names, see ``Objective``)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(ABC):
    """A training objective: a small pure function of what its spec asks a step for (``PairLogps`` or
    ``TokenLogits``).

    Subclasses cite their equation in the docstring and return ``ObjectiveOutput`` with at least a
    ``loss`` metric; pair objectives also report TRL's ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``
    (``PairLogps.reward_metrics``).
    """

    def __init__(self, config: ComponentConfig):
        self.config = config

    def setup(self, policy: PolicyModel) -> None:
        """Called once with the built policy before the first step (e.g. to read ``num_classes``)."""

    @property
    def conditions(self) -> tuple[str, ...]:
        """Names of the per-row inputs ``sample_conditions`` draws (``("lambda_B",)`` for test-time λ)."""
        return ()

    def sample_conditions(self, pairs: Pairs, generator: torch.Generator) -> dict[str, Tensor]:
        """Per-row draws for the rows of ``pairs``, made before the forward passes from the pair
        sampler's generator. ``lambda_B`` conditions the policy (test-time λ); every key reaches
        ``__call__`` in its input's ``conditions`` (GFT keeps its ``beta_B`` there)."""
        return {}

    @abstractmethod
    def __call__(self, batch: PairLogps | TokenLogits) -> ObjectiveOutput:
        """The loss for one (micro-)batch."""


@dataclass(frozen=True)
class ObjectiveSpec(ComponentSpec):
    """``factory(config) -> Objective``, and what a training step must compute for it.

    - ``inputs``: ``pair_logps``, ``token_logits`` or ``generated_pairs`` (module docstring);
    - ``needs_reference``: reference log-probs (``ref_pos_B``/``ref_neg_B``) are computed (pair inputs);
    - ``needs_negatives``: the policy (and reference) also score a negative per row (``pair_logps``);
    - ``logits``: the policy forwards a ``token_logits`` objective receives, by name;
    - ``trains_null``: null-class rows are trained, so ``sampler.uncond_ratio`` must be > 0;
    - ``default_uncond_ratio``: the sampler's ratio when a recipe does not set it;
    - ``logp_reduction``: token log-probs are summed per sequence, or averaged (length-normalised).
    """

    inputs: Literal["pair_logps", "token_logits", "generated_pairs"] = "pair_logps"
    needs_reference: bool = True
    needs_negatives: bool = True
    logits: Mapping[str, LogitsRequest] = field(default_factory=dict)
    trains_null: bool = False
    default_uncond_ratio: float = 0.0
    logp_reduction: Literal["sum", "mean"] = "sum"

    kind: ClassVar[str] = "objective"
    builds: ClassVar[type] = Objective

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"objective '{self.name}'"
        if (self.inputs == "token_logits") != bool(self.logits):
            raise ValueError(f"{where}: logits requests are what a token_logits objective takes, and only it")
        if self.inputs == "generated_pairs" and not issubclass(self.config, GenerationConfig):
            raise TypeError(f"{where}: a generated_pairs objective's config must subclass alignkit.GenerationConfig")

    @property
    def uses_reference(self) -> bool:
        return self.inputs != "token_logits" and self.needs_reference

    @property
    def uses_negatives(self) -> bool:
        return self.inputs == "generated_pairs" or (self.inputs == "pair_logps" and self.needs_negatives)

    def policy_rows(self, batch_size: int) -> int:
        """Rows one micro-batch of ``batch_size`` images puts through the policy with gradients."""
        if self.inputs == "token_logits":
            return batch_size * sum(request.grad for request in self.logits.values())
        return batch_size * (2 if self.uses_negatives else 1)
