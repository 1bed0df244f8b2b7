"""The interfaces every component implements.

Shapes follow VAR's suffix convention: ``B`` batch, ``L`` image tokens per sample, ``V`` vocabulary.
Labels are class ids in ``[0, num_classes)``; the null (unconditional) class is ``num_classes``.

Data flow of one alignment step::

    (tokens_BL, labels_B) --PairSampler--> Pairs (positive / negative labels, null-class mask)
    PolicyModel.logits on [x; x] with [c+; c-] --sequence_logps--> policy log-probs (2B,)
    ReferenceModel.sequence_logps on the same rows                 --> reference log-probs (2B,)
    Objective(PairLogps) --> ObjectiveOutput(loss, metrics)
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class ComponentConfig(BaseModel):
    """Base of every plugin's config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------------
# Pairs and log-probs


@dataclass(frozen=True)
class Pairs:
    """The conditions a PairSampler chose for one batch.

    ``labels_pos_B`` is the data label, ``labels_neg_B`` the mismatched label; rows in ``uncond_B``
    had both replaced by the null class (the CCA+CFG trick that keeps the unconditional model
    trained).
    """

    labels_pos_B: Tensor
    labels_neg_B: Tensor
    uncond_B: Tensor

    @property
    def neg_is_pos_B(self) -> Tensor:
        """Rows whose "negative" condition equals the positive one (null rows and label collisions)."""
        return self.uncond_B | (self.labels_neg_B == self.labels_pos_B)


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
        """TRL-compatible metrics: rewards are β·r, log-probs are the policy's summed log-probs."""
        with torch.no_grad():
            r_pos_B = self.r_pos_B.detach()
            metrics = {"rewards/pos": beta * r_pos_B.mean(), "logps/pos": self.policy_pos_B.detach().mean()}
            if self.policy_neg_B is not None:
                r_neg_B = self.r_neg_B.detach()
                metrics["rewards/neg"] = beta * r_neg_B.mean()
                metrics["rewards/margins"] = beta * (r_pos_B - r_neg_B).mean()
                metrics["rewards/accuracies"] = (r_pos_B > r_neg_B).float().mean()
                metrics["logps/neg"] = self.policy_neg_B.detach().mean()
        return metrics


def _require(value: Tensor | None, name: str) -> Tensor:
    if value is None:
        raise ValueError(f"PairLogps.{name} is required by this objective but was not computed")
    return value


@dataclass
class ObjectiveOutput:
    """A scalar loss to minimise and detached scalar metrics (stable names, see ``Objective``)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The four interfaces


class Objective(ABC):
    """A training objective: a small pure function of ``PairLogps``.

    Subclasses cite their equation in the docstring, declare what they need through the class
    flags below, and return ``ObjectiveOutput`` with at least these metrics: ``loss``,
    ``rewards/pos``, ``rewards/neg``, ``rewards/margins``, ``rewards/accuracies``, ``logps/pos``,
    ``logps/neg`` (the last five only when negatives are used).
    """

    needs_reference: ClassVar[bool] = True
    """Whether ``ref_pos_B`` / ``ref_neg_B`` must be computed."""
    needs_negatives: ClassVar[bool] = True
    """Whether the policy (and reference) must be evaluated under the negative condition."""
    uses_uncond: ClassVar[bool] = False
    """Whether the objective trains null-class rows and so needs ``uncond_ratio > 0``."""
    default_uncond_ratio: ClassVar[float] = 0.0
    """The sampler's ``uncond_ratio`` when a recipe does not set it."""
    logp_reduction: ClassVar[Literal["sum", "mean"]] = "sum"
    """How token log-probs are reduced per sequence (``sum`` as in CCA/DPO; ``mean`` for length-normalised losses)."""

    def __init__(self, config: ComponentConfig):
        self.config = config

    def sample_conditions(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Per-row inputs the policy is conditioned on during training, drawn before its forward pass
        (CCA's test-time λ returns ``{"lambda_B": …}``); they reach ``__call__`` in ``logps.conditions``."""
        return {}

    @abstractmethod
    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        """The loss for one (micro-)batch."""


class PairSampler(ABC):
    """Chooses negative conditions inside a batch and masks rows to the null class.

    ``negatives`` picks ``labels_neg_B``; ``__call__`` then replaces both labels of a Bernoulli
    (``uncond_ratio``) subset of rows by the null class, drawing from the sampler's own seeded
    generator, exactly in the order of the official code (negatives first, then the mask).
    """

    def __init__(self, config: ComponentConfig, *, null_label: int, uncond_ratio: float, generator: torch.Generator):
        self.config = config
        self.null_label = null_label
        self.uncond_ratio = uncond_ratio
        self.generator = generator

    @abstractmethod
    def negatives(self, labels_B: Tensor) -> Tensor:
        """``labels_neg_B`` for CPU int64 ``labels_B``."""

    def __call__(self, labels_B: Tensor) -> Pairs:
        device = labels_B.device
        labels_B = labels_B.detach().to("cpu", torch.int64)
        labels_neg_B = self.negatives(labels_B)
        if self.uncond_ratio > 0:
            uncond_B = torch.rand(labels_B.shape[0], generator=self.generator) < self.uncond_ratio
        else:
            uncond_B = torch.zeros(labels_B.shape[0], dtype=torch.bool)
        null_B = torch.full_like(labels_B, self.null_label)
        return Pairs(
            labels_pos_B=torch.where(uncond_B, null_B, labels_B).to(device),
            labels_neg_B=torch.where(uncond_B, null_B, labels_neg_B).to(device),
            uncond_B=uncond_B.to(device),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class PolicyModel(nn.Module, ABC):
    """A trainable class-conditional AR image model that returns logits only.

    Implementations set ``num_classes``, ``vocab_size`` and ``seq_len`` (image tokens per sample).
    The null class is ``num_classes``; its embedding row always exists.
    """

    num_classes: int
    vocab_size: int
    seq_len: int

    @property
    def null_label(self) -> int:
        return self.num_classes

    @abstractmethod
    def logits(self, tokens_BL: Tensor, labels_B: Tensor) -> Tensor:
        """Teacher forcing: ``logits_BLV[:, i]`` is the distribution of ``tokens_BL[:, i]``.

        Backbones built with ``lambda_conditioning`` also take ``lambda_B`` (test-time λ,
        ``alignkit.conditioning``); without it they compute what the unconditioned model computes.
        """

    @property
    def supports_lambda(self) -> bool:
        """Whether the model was built with a λ embedding (test-time λ)."""
        return getattr(self, "lambda_embed", None) is not None

    def forward(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        # Wrappers (DeepSpeed ZeRO-3 gathers parameters in module hooks) need logits to go through
        # __call__, so forward is logits.
        if lambda_B is None:
            return self.logits(tokens_BL, labels_B)
        return self.logits(tokens_BL, labels_B, lambda_B=lambda_B)

    @abstractmethod
    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """Sample ``tokens_BL`` (int64). ``guidance`` is s of the paper's Eq. 2 (0 = guidance-free,
        which must not evaluate the unconditional branch)."""

    @abstractmethod
    def official_state_dict(self, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Weights under the official key names (what the official code's ``state_dict()`` holds).

        ``state`` is a dict shaped like ``self.state_dict()`` to convert instead of the current
        weights (a sharded backend passes the gathered fp32 master weights).
        """

    def official_checkpoint(self, state_dict: dict[str, Tensor]) -> Any:
        """What a file must hold for the official code to load ``state_dict`` (e.g. ``{"model": sd}``)."""
        raise NotImplementedError(f"{type(self).__name__} does not define its official checkpoint layout")

    def save_official(self, path: str) -> None:
        """Write a checkpoint the official code loads (its wrapping and key names), atomically."""
        from alignkit.checkpoints import save_torch

        save_torch(self.official_checkpoint(self.official_state_dict()), path)

    def save_safetensors(self, path: str) -> None:
        """The official state_dict as safetensors, atomically."""
        from alignkit.checkpoints import save_safetensors

        save_safetensors(self.official_state_dict(), path)

    def decays(self, name: str, param: nn.Parameter) -> bool:
        """Whether AdamW's weight decay applies to this parameter (official LlamaGen rule: matrices
        and embeddings yes, norms no). Backbones with other official rules override this."""
        return param.ndim >= 2

    def check_batch(self, tokens_BL: Tensor, labels_B: Tensor, allow_null: bool = True) -> None:
        """Raise ``AlignkitError`` for token ids or labels this model cannot take (data labels must not
        be the null class: ``allow_null=False``)."""
        from alignkit.errors import AlignkitError

        if tokens_BL.ndim != 2 or tokens_BL.shape[1] != self.seq_len:
            raise AlignkitError(f"tokens have shape {tuple(tokens_BL.shape)}, the model expects (B, {self.seq_len})")
        if labels_B.shape != tokens_BL.shape[:1]:
            raise AlignkitError(f"labels have shape {tuple(labels_B.shape)}, expected ({tokens_BL.shape[0]},)")
        if tokens_BL.numel() and (int(tokens_BL.min()) < 0 or int(tokens_BL.max()) >= self.vocab_size):
            raise AlignkitError(f"token ids span [{int(tokens_BL.min())}, {int(tokens_BL.max())}], "
                                f"the vocabulary is [0, {self.vocab_size})")
        top = self.num_classes if allow_null else self.num_classes - 1
        if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) > top):
            raise AlignkitError(f"labels span [{int(labels_B.min())}, {int(labels_B.max())}], the model has "
                                f"{self.num_classes} classes (null class {self.num_classes})")


class ReferenceModel(ABC):
    """A frozen model that only answers sequence log-probs, without gradients."""

    @abstractmethod
    def sequence_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        """``logp_B``: token log-probs of ``tokens_BL`` under ``labels_B``, summed (or averaged)."""


class Tokenizer(nn.Module, ABC):
    """Images in [-1, 1] (B, 3, H, W) to token ids (B, L) and back."""

    vocab_size: int
    seq_len: int
    image_size: int

    @property
    def device(self) -> torch.device:
        """Where its weights are (the CPU for a tokenizer without any)."""
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @abstractmethod
    def encode(self, images_B3HW: Tensor) -> Tensor:
        """``tokens_BL`` int64, in the backbone's token order."""

    @abstractmethod
    def decode(self, tokens_BL: Tensor) -> Tensor:
        """Images (B, 3, H, W), roughly in [-1, 1]."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights that its factory's ``checkpoint=path`` rebuilds it from. Optional; a
        tokenizer that can be built without a checkpoint (fitted on the data) should have it, so
        that training runs record the tokenizer they used."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its weights")
