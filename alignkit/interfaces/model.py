"""Backbones: the trainable policy, the frozen reference, and what a backbone says about itself.

Shapes follow VAR's suffix convention: ``B`` batch, ``L`` image tokens per sample, ``V`` vocabulary.
Labels are class ids in ``[0, num_classes)``; the null (unconditional) class is ``num_classes``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from alignkit.checkpoints import save_safetensors, save_torch
from alignkit.errors import AlignkitError
from alignkit.logprobs import linear_token_logps, token_logps as logits_token_logps
from alignkit.recompute import Checkpointing
from alignkit.interfaces.component import ComponentConfig, ComponentSpec

if TYPE_CHECKING:
    from alignkit.interfaces.tokenizer import Tokenizer


class SamplingOptions(ComponentConfig):
    """How a backbone samples besides ``guidance`` and the generator; each backbone subclasses it
    (``PolicyModel.sampling_options``) with its own options and defaults, and ``generate`` takes
    exactly these fields as keywords. Unknown options are refused by validation."""

    temperature: float = Field(1.0, gt=0, description="divides the logits after guidance")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0 = off)")
    top_p: float = Field(0.0, ge=0, le=1, description="nucleus filter in (0, 1); 0 and 1 are off")
    schedule: Literal["constant", "linear"] = Field("constant", description="guidance over the sequence: constant, "
                                                    "or VAR's linear ramp (the CCA paper's CFGv2)")
    greedy: bool = Field(False, description="take the most likely token instead of drawing")
    lambda_: float | None = Field(None, gt=0, description="test-time λ of a λ-conditioned model")


@dataclass(frozen=True)
class ModelShape:
    """What memory planning needs of a backbone, read from its config (also on the meta device).

    ``block_saved_fp32`` and ``block_saved_compute`` count the elements one transformer block saves
    for its backward pass, per row and position, in fp32 and in the compute dtype (bf16 or fp32);
    ``block_kept_selective`` those it keeps under selective checkpointing (``alignkit.recompute``), in
    the compute dtype: its input and the outputs of its matrix products and attention.
    """

    layers: int
    width: int
    heads: int
    ffn_width: int
    seq_len: int
    vocab: int
    block_saved_fp32: int
    block_saved_compute: int
    checkpointing: Checkpointing = False
    block_kept_selective: int = 0

    def block_activation_bytes(self, compute_bytes: int) -> int:
        """Bytes one block saves for backward per row and position, without checkpointing."""
        return 4 * self.block_saved_fp32 + compute_bytes * self.block_saved_compute

    def block_kept_bytes(self, compute_bytes: int) -> int:
        """Bytes one block keeps from its forward to its backward per row and position, as checkpointed."""
        if self.checkpointing == "selective":
            return compute_bytes * self.block_kept_selective
        if self.checkpointing:
            return compute_bytes * self.width  # the block's input
        return self.block_activation_bytes(compute_bytes)


class PolicyModel(nn.Module, ABC):
    """A trainable class-conditional AR image model that returns logits only.

    Implementations set ``num_classes``, ``vocab_size`` and ``seq_len`` (image tokens per sample)
    and ``sampling_options`` (their ``SamplingOptions`` model), and ``uint8_conversion`` (their
    official sampler's: ``alignkit_sampling.images``). The null class is ``num_classes``; its embedding
    row always exists.
    """

    num_classes: int
    vocab_size: int
    seq_len: int
    sampling_options: ClassVar[type[SamplingOptions]] = SamplingOptions
    uint8_conversion: ClassVar[Literal["round", "truncate"]] = "round"

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def supports_lambda(self) -> bool:
        """Whether the model takes a per-row λ (built with a λ embedding, test-time λ)."""
        return False

    @abstractmethod
    def logits(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """Teacher forcing: ``logits_BLV[:, i]`` (float32) is the distribution of ``tokens_BL[:, i]``.
        ``lambda_B`` is only given to models that ``supports_lambda``."""

    def features(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """Teacher forcing up to the output projection: ``h_BLD`` with ``logits(...) ==
        output_projection()(h_BLD).float()``. Backbones that give both get the fused log-probs."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its features")

    def output_projection(self) -> nn.Linear | None:
        """The final ``nn.Linear`` from ``features`` to logits, or ``None`` (log-probs then come from
        the full logits)."""
        return None

    def forward(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None, *,
                token_logps: bool = False) -> Tensor:
        """``logits_BLV``, or with ``token_logps`` the fp32 ``logp_BL`` of ``tokens_BL`` themselves
        (fused with the output projection when the backbone exposes it).

        Wrappers (DeepSpeed ZeRO-3 gathers parameters in module hooks) need every pass to go through
        ``__call__``, so both are ``forward``."""
        conditions = {} if lambda_B is None else {"lambda_B": lambda_B}
        if not token_logps:
            return self.logits(tokens_BL, labels_B, **conditions)
        head = self.output_projection()
        if head is None:
            return logits_token_logps(self.logits(tokens_BL, labels_B, **conditions), tokens_BL)
        return linear_token_logps(self.features(tokens_BL, labels_B, **conditions), head, tokens_BL)

    @abstractmethod
    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """Sample ``tokens_BL`` (int64). ``guidance`` is s of the paper's Eq. 2 (0 = guidance-free,
        which must not evaluate the unconditional branch); ``options`` are the fields of
        ``sampling_options``."""

    def generate_images(self, labels_B: Tensor, tokenizer: Tokenizer, *, guidance: float = 0.0,
                        generator: torch.Generator | None = None, **options: Any) -> tuple[Tensor, Tensor]:
        """``(tokens_BL, images_B3HW)``: sample, then decode with ``tokenizer``. A backbone whose
        sampler keeps a latent that its tokens do not describe (VAR's smoothed ``f_hat``) decodes that."""
        tokens_BL = self.generate(labels_B, guidance=guidance, generator=generator, **options)
        return tokens_BL, tokenizer.decode(tokens_BL.to(tokenizer.device))

    def shape(self) -> ModelShape:
        """Layers, widths, positions, vocabulary and per-block activation sizes, for ``alignkit plan``."""
        raise AlignkitError(f"the {type(self).__name__} backbone does not describe its shape "
                            "(PolicyModel.shape), so it cannot be planned")

    @abstractmethod
    def official_state_dict(self, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Weights under the official key names (what the official code's ``state_dict()`` holds).

        ``state`` is a dict shaped like ``self.state_dict()`` to convert instead of the current
        weights (a sharded backend passes the gathered fp32 master weights).
        """

    def official_checkpoint(self, state_dict: dict[str, Tensor]) -> Any:
        """What a file must hold for the official code to load ``state_dict`` (e.g. ``{"model": sd}``)."""
        return dict(state_dict)

    def save_official(self, path: str) -> None:
        """Write a checkpoint the official code loads (its wrapping and key names), atomically."""
        save_torch(self.official_checkpoint(self.official_state_dict()), path)

    def save_safetensors(self, path: str) -> None:
        """The official state_dict as safetensors, atomically."""
        save_safetensors(self.official_state_dict(), path)

    def decays(self, name: str, param: nn.Parameter) -> bool:
        """Whether AdamW's weight decay applies to this parameter (official LlamaGen rule: matrices
        and embeddings yes, norms no). Backbones with other official rules override this."""
        return param.ndim >= 2

    def check_batch(self, tokens_BL: Tensor, labels_B: Tensor, allow_null: bool = True) -> None:
        """Raise ``AlignkitError`` for token ids or labels this model cannot take (data labels must not
        be the null class: ``allow_null=False``)."""
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
    """A frozen model that answers sequence log-probs without gradients (and, for objectives with
    generated negatives, samples).

    ``model`` is its frozen network when it has one: backends move, cast or shard it, compare it with
    the policy and, in self-play rounds, load the policy's weights into it; ``None`` for references
    that compute log-probs another way.
    """

    model: nn.Module | None = None

    @abstractmethod
    def sequence_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        """``logp_B``: token log-probs of ``tokens_BL`` under ``labels_B``, summed (or averaged)."""

    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """``tokens_BL`` sampled from the reference (its ``model``'s sampler)."""
        if not isinstance(self.model, PolicyModel):
            raise AlignkitError(f"{type(self).__name__} cannot generate: objectives with generated negatives need "
                                "a reference whose model is a PolicyModel")
        return self.model.generate(labels_B, guidance=guidance, generator=generator, **options)


@dataclass(frozen=True)
class BackboneSpec(ComponentSpec):
    """``factory(config, *, checkpoint: Path | None, tokenizer: Tokenizer | Path | None) -> PolicyModel``.

    ``checkpoint`` is official weights (random init when ``None``; the planner builds on the meta
    device with ``None``); ``presets`` name the standard sizes. ``tokenizer`` names the tokenizer the backbone needs for teacher forcing (VAR embeds its inputs
    through its VQVAE), else ``None``.
    """

    tokenizer: str | None = None

    kind: ClassVar[str] = "backbone"
    builds: ClassVar[type] = PolicyModel
