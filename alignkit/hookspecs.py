"""Every hook an alignkit plugin can implement.

A plugin is a module (or object) with functions decorated by ``alignkit.hookimpl`` whose names are
the hook names below. It is found through the ``alignkit`` entry-point group::

    [project.entry-points.alignkit]
    my_plugin = "my_package.plugin"

or, for one project, through an ``alignkit_plugins.py`` file beside the recipe. A hook may accept
fewer arguments than its specification lists; calls pass arguments by keyword.

Registration hooks return an iterable of spec objects (``alignkit.components``); a component name
may be registered by one plugin only. ``firstresult`` hooks stop at the first plugin that returns
something other than ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from alignkit.components import (BackboneSpec, BackendSpec, DatasetSpec, FeatureExtractorSpec,
                                     ObjectiveSpec, PairSamplerSpec, TokenizerSpec)
    from alignkit.interfaces import PolicyModel, ReferenceModel
    from alignkit.recipe import Recipe

PROJECT = "alignkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------- registration


@hookspec
def alignkit_register_objectives() -> Iterable[ObjectiveSpec]:
    """Objectives (losses) this plugin provides, e.g. ``ObjectiveSpec("ipo", IPO, IPOConfig, "…")``.

    The factory is called as ``factory(config)`` and returns an ``alignkit.Objective``; recipes
    select it with ``[objective] name = "ipo"``.
    """


@hookspec
def alignkit_register_pair_samplers() -> Iterable[PairSamplerSpec]:
    """Pair samplers (how negative conditions are drawn inside a batch).

    Called as ``factory(config, null_label=…, uncond_ratio=…, generator=…)``; returns an
    ``alignkit.PairSampler``. Recipes select it with ``[sampler] name = "…"``.
    """


@hookspec
def alignkit_register_backbones() -> Iterable[BackboneSpec]:
    """Model families, called as ``factory(config, checkpoint=…, tokenizer=…)`` -> ``PolicyModel``.

    ``presets`` on the spec name the standard sizes (``llamagen-B`` …).
    """


@hookspec
def alignkit_register_tokenizers() -> Iterable[TokenizerSpec]:
    """Image tokenizers, called as ``factory(config, checkpoint=…)`` -> ``Tokenizer``."""


@hookspec
def alignkit_register_datasets() -> Iterable[DatasetSpec]:
    """Training data sources, called as ``factory(config, tokenizer=…)`` -> an ``alignkit.data.TokenDataset``."""


@hookspec
def alignkit_register_feature_extractors() -> Iterable[FeatureExtractorSpec]:
    """Feature extractors for evaluation (FID/IS/precision/recall), called as ``factory(config)``."""


@hookspec
def alignkit_register_backends() -> Iterable[BackendSpec]:
    """Training backends (one process, DeepSpeed ZeRO, …), called as ``factory(config)``."""


@hookspec
def alignkit_register_commands(app: typer.Typer) -> None:
    """Add commands to the ``alignkit`` CLI: ``@app.command()`` on the given Typer app."""


# ---------------------------------------------------------------------------- override points


@hookspec(firstresult=True)
def alignkit_build_reference(policy: PolicyModel, recipe: Recipe) -> ReferenceModel | None:
    """Build the frozen reference for ``policy``; return ``None`` to leave it to the next plugin.

    Without any implementation alignkit uses a frozen copy of the policy, in train mode when
    ``reference.train_mode`` is set (the official CCA behaviour: dropout stays on).
    """


@hookspec(firstresult=True)
def alignkit_wrap_distributed(model: Any, role: str, recipe: Recipe) -> Any | None:
    """Wrap ``model`` (``role`` is ``"policy"`` or ``"reference"``) for distributed execution.

    Return the wrapped model, or ``None`` to leave it to the next plugin (and finally the backend).
    """


# ---------------------------------------------------------------------------- lifecycle


@hookspec
def alignkit_before_train(run: Any) -> None:
    """Called once the run (recipe, models, data, output folder) is built, before the first step."""


@hookspec
def alignkit_after_step(run: Any, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step with that step's metrics (already reduced across ranks)."""


@hookspec
def alignkit_after_eval(run: Any, results: dict[str, Any]) -> None:
    """Called after an evaluation with its results (FID, IS, precision, recall, …)."""


@hookspec
def alignkit_on_train_error(run: Any, error: BaseException) -> None:
    """Called when training stops with an exception, before it propagates."""
