"""The stable Python entry points: build components by name, as recipes do."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from alignkit.errors import AlignkitError, validation_problems
from alignkit.interfaces import ComponentConfig, PolicyModel, Tokenizer
from alignkit.plugins import Component, get_plugins


def component_config(kind: str, name: str, config: dict[str, Any] | None = None) -> tuple[Component, ComponentConfig]:
    """Resolve ``name`` (with an optional ``-preset``) and validate ``config`` against its model."""
    component, preset = get_plugins().resolve_preset(kind, name)
    try:
        return component, component.spec.config.model_validate({**preset, **(config or {})})
    except ValidationError as exc:
        raise AlignkitError(f"{kind.replace('_', ' ')} '{name}': invalid config: {validation_problems(exc)}") from None


def load_policy(name: str, checkpoint: str | os.PathLike | None = None, config: dict[str, Any] | None = None,
                tokenizer: Tokenizer | str | os.PathLike | None = None) -> PolicyModel:
    """A ``PolicyModel`` of backbone ``name`` (``"llamagen"``, ``"llamagen-L"``, ``"var-d16"`` …).

    ``config`` holds the backbone's options (the official field names); a preset name supplies them
    for the standard sizes. ``checkpoint`` is an official weights file (random init if omitted).
    ``tokenizer`` is a tokenizer or its checkpoint path, for backbones that need one (VAR).
    """
    component, cfg = component_config("backbone", name, config)
    return component.build(cfg, checkpoint=checkpoint, tokenizer=tokenizer)


def load_tokenizer(name: str, checkpoint: str | os.PathLike | None = None,
                   config: dict[str, Any] | None = None, random_init: bool = False) -> Tokenizer:
    """A ``Tokenizer`` (``"llamagen-vq"``, ``"var-vqvae"`` …) with the weights in ``checkpoint``.
    Without one it refuses (its codes would mean nothing) unless ``random_init`` (tests) or the
    tokenizer has no trained weights (``TokenizerSpec.needs_checkpoint = False``)."""
    component, cfg = component_config("tokenizer", name, config)
    if checkpoint is None and not random_init and component.spec.needs_checkpoint:
        raise AlignkitError(f"tokenizer '{name}' needs its weights (checkpoint=PATH; --checkpoint on the command "
                            "line): a randomly initialised tokenizer gives meaningless codes")
    return component.build(cfg, checkpoint=checkpoint)
