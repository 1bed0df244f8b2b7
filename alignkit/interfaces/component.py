"""What every plugin component has: a typed config and a spec that says how to build it.

A registration hook returns spec objects, one per component. ``factory`` is called with a validated
config and the keyword arguments that the spec's kind documents, nothing else; the capabilities the
engine needs before it builds anything are typed fields of the spec. Every kind's spec lives beside
its interface (``alignkit.interfaces.*``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Base of every plugin's config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class EmptyConfig(ComponentConfig):
    """For components without options."""


@dataclass(frozen=True)
class ComponentSpec:
    """A name, how to build the component, its typed config and a one-line summary.

    ``factory(config, **context)`` builds it from a validated instance of ``config``; the context is
    documented by each kind and is all the engine passes. ``presets`` maps a preset name to config
    values, so that ``"<name>-<preset>"`` (``llamagen-L``, ``var-d16``) names the component with them.
    """

    name: str
    factory: Callable[..., Any]
    config: type[ComponentConfig] = EmptyConfig
    summary: str = ""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    kind: ClassVar[str] = "component"
    builds: ClassVar[type | None] = None
    """The interface a built component must implement (checked when the engine builds it)."""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"component name must be a non-empty word, got {self.name!r}")
        if not (isinstance(self.config, type) and issubclass(self.config, ComponentConfig)):
            raise TypeError(f"{self.kind} '{self.name}': config must subclass alignkit.ComponentConfig")
        if not callable(self.factory):
            raise TypeError(f"{self.kind} '{self.name}': factory must be callable")
