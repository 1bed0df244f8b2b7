"""Every hook an alignkit plugin can implement.

A plugin is a module (or object) with functions decorated by ``alignkit.hookimpl`` named as the hooks
below, found through the ``alignkit`` entry-point group (``[project.entry-points.alignkit] my_plugin =
"my_package.plugin"``) or, for one project, in an ``alignkit_plugins.py`` file beside the recipe. A hook
may accept fewer arguments than its specification lists; calls pass arguments by keyword.

Registration hooks return spec objects (``alignkit.interfaces``), each stating the one factory signature
the engine calls and the capabilities it reads; a component name belongs to one plugin. A factory that
raises, or returns something other than the kind's interface, is one line naming the component and its
plugin. ``firstresult`` hooks stop at the first plugin that returns something other than ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from alignkit.interfaces import (BackboneSpec, BackendSpec, DatasetSpec, FeatureExtractorSpec, ObjectiveSpec,
                                     PairSamplerSpec, PolicyModel, ReferenceModel, TokenizerSpec)
    from alignkit.recipe import Recipe

PROJECT = "alignkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------- registration


@hookspec
def alignkit_register_objectives() -> Iterable[ObjectiveSpec]:
    """Objectives (losses): ``ObjectiveSpec("ipo", IPO, IPOConfig, "…")``; recipes select one with
    ``[objective] name = "ipo"``. Built as ``factory(config)``, which returns an ``alignkit.Objective``."""


@hookspec
def alignkit_register_pair_samplers() -> Iterable[PairSamplerSpec]:
    """Pair samplers (how negative conditions are drawn inside a batch), selected with ``[sampler]
    name``; built as ``factory(config, null_label=…, uncond_ratio=…, generator=…)``."""


@hookspec
def alignkit_register_backbones() -> Iterable[BackboneSpec]:
    """Model families (``PolicyModel``), built as ``factory(config, checkpoint=…, tokenizer=…)``;
    ``presets`` on the spec name the standard sizes (``llamagen-B`` …)."""


@hookspec
def alignkit_register_tokenizers() -> Iterable[TokenizerSpec]:
    """Image tokenizers, built as ``factory(config, checkpoint=…)`` -> ``alignkit.Tokenizer``."""


@hookspec
def alignkit_register_datasets() -> Iterable[DatasetSpec]:
    """Training data sources, built as ``factory(config, tokenizer=…)`` -> ``alignkit.TokenDataset``."""


@hookspec
def alignkit_register_feature_extractors() -> Iterable[FeatureExtractorSpec]:
    """Feature extractors for evaluation (FID/IS/precision/recall), built as ``factory(config)``."""


@hookspec
def alignkit_register_backends() -> Iterable[BackendSpec]:
    """Training backends (one process, DeepSpeed ZeRO, …), built as ``factory(config, recipe=…)``."""


@hookspec
def alignkit_register_commands(app: typer.Typer) -> None:
    """Add commands to the ``alignkit`` CLI with ``app.command(NAME)(function)``; wrap the function
    in ``alignkit.cli.common.user_errors`` so that an ``AlignkitError`` is one line and exit status 2."""


@hookspec
def alignkit_register_recipes() -> Iterable[Path]:
    """Folders of ready-made recipes (``*.toml``) that ``alignkit recipes`` lists and prints."""


# ---------------------------------------------------------------------------- override points


@hookspec(firstresult=True)
def alignkit_build_reference(policy: PolicyModel, recipe: Recipe) -> ReferenceModel | None:
    """Build the frozen reference for ``policy``; return ``None`` to leave it to the next plugin.

    Without any implementation alignkit uses a frozen copy of the policy (or of
    ``reference.checkpoint``), in train mode when ``reference.train_mode`` is set (the official CCA
    behaviour: dropout stays on). Backends place the reference's ``model`` as they place the policy.
    """


# ---------------------------------------------------------------------------- lifecycle


@hookspec
def alignkit_before_train(run: Any) -> None:
    """Called once the run (recipe, models, data, output folder) is built, before the first step."""


@hookspec
def alignkit_after_step(run: Any, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step with that step's metrics (already reduced across ranks)."""


@hookspec
def alignkit_after_train(run: Any) -> None:
    """Called on every process when training has ended normally, after the export."""


@hookspec
def alignkit_after_eval(run: Any, results: dict[str, Any]) -> None:
    """Called after an evaluation with its results (FID, IS, precision, recall, …)."""


@hookspec
def alignkit_on_train_error(run: Any, error: BaseException) -> None:
    """Called when training stops with an exception, before it propagates."""
