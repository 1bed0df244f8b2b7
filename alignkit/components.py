"""Typed specs that registration hooks return, one per component a plugin provides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from alignkit.interfaces import ComponentConfig


class EmptyConfig(ComponentConfig):
    """For components without options."""


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin registers: a name, how to build it, its typed config, and a one-line summary.

    ``factory(config, **context)`` builds the component from a validated instance of ``config``;
    each kind documents the context it passes.
    """

    name: str
    factory: Callable[..., Any]
    config: type[ComponentConfig] = EmptyConfig
    summary: str = ""

    kind: ClassVar[str] = "component"

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"component name must be a non-empty word, got {self.name!r}")
        if not (isinstance(self.config, type) and issubclass(self.config, ComponentConfig)):
            raise TypeError(f"{self.kind} '{self.name}': config must subclass alignkit.ComponentConfig")


@dataclass(frozen=True)
class ObjectiveSpec(ComponentSpec):
    """``factory(config) -> Objective``."""

    kind: ClassVar[str] = "objective"


@dataclass(frozen=True)
class PairSamplerSpec(ComponentSpec):
    """``factory(config, null_label=int, uncond_ratio=float, generator=torch.Generator) -> PairSampler``."""

    kind: ClassVar[str] = "pair_sampler"


@dataclass(frozen=True)
class BackboneSpec(ComponentSpec):
    """``factory(config, checkpoint=path|None, tokenizer=Tokenizer|None) -> PolicyModel``.

    ``presets`` maps a size name to config values, so that ``"<name>-<preset>"`` (e.g.
    ``llamagen-L``) works wherever a backbone name is accepted. ``tokenizer`` names the tokenizer
    the backbone needs for teacher forcing (VAR embeds its inputs through the VQVAE), else ``None``.
    """

    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tokenizer: str | None = None

    kind: ClassVar[str] = "backbone"


@dataclass(frozen=True)
class TokenizerSpec(ComponentSpec):
    """``factory(config, checkpoint=path|None) -> Tokenizer``; ``presets`` as for backbones."""

    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    kind: ClassVar[str] = "tokenizer"


@dataclass(frozen=True)
class DatasetSpec(ComponentSpec):
    """``factory(config, tokenizer=Tokenizer|None) -> alignkit.data.TokenDataset``; ``tokenizer`` is the
    recipe's ``[tokenizer]``, for datasets that tokenize images themselves."""

    kind: ClassVar[str] = "dataset"


@dataclass(frozen=True)
class FeatureExtractorSpec(ComponentSpec):
    """``factory(config) -> FeatureExtractor`` (images to features and class probabilities)."""

    kind: ClassVar[str] = "feature_extractor"


@dataclass(frozen=True)
class BackendSpec(ComponentSpec):
    """``factory(config) -> Backend``: how a run is placed on devices and optimised."""

    kind: ClassVar[str] = "backend"


SPEC_TYPES: dict[str, type[ComponentSpec]] = {
    spec.kind: spec
    for spec in (ObjectiveSpec, PairSamplerSpec, BackboneSpec, TokenizerSpec, DatasetSpec, FeatureExtractorSpec,
                 BackendSpec)
}
