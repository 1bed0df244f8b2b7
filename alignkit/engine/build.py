"""Components of a run, built from a validated recipe through the plugin registries."""

from __future__ import annotations

import copy

import torch

from alignkit.data import TokenDataset
from alignkit.errors import AlignkitError
from alignkit.interfaces import Objective, PairSampler, PolicyModel, ReferenceModel, Tokenizer
from alignkit.plugins import Plugins, get_plugins
from alignkit.recipe import Recipe
from alignkit.reference import FrozenReference


def plugins_for(recipe: Recipe) -> Plugins:
    return get_plugins(recipe.path)


def build_tokenizer(recipe: Recipe) -> Tokenizer | None:
    if recipe.tokenizer is None:
        return None
    component, _ = plugins_for(recipe).resolve_preset("tokenizer", recipe.tokenizer.name)
    return component.spec.factory(recipe.tokenizer.config, checkpoint=recipe.tokenizer.checkpoint)


def build_policy(recipe: Recipe, checkpoint=None, tokenizer: Tokenizer | None = None) -> PolicyModel:
    """The backbone with its weights (``checkpoint`` defaults to ``model.checkpoint``)."""
    component, _ = plugins_for(recipe).resolve_preset("backbone", recipe.model.backbone)
    if component.spec.tokenizer and tokenizer is None:
        tokenizer = build_tokenizer(recipe)
    checkpoint = checkpoint if checkpoint is not None else recipe.model.checkpoint
    return component.spec.factory(recipe.model.config, checkpoint=checkpoint, tokenizer=tokenizer)


def build_reference(policy: PolicyModel, recipe: Recipe) -> ReferenceModel | None:
    """A plugin's reference (``alignkit_build_reference``), else a frozen copy of the policy (or of
    ``reference.checkpoint``), in train or eval mode as the recipe says."""
    plugins = plugins_for(recipe)
    objective = plugins.get("objective", recipe.objective.name).spec.factory
    if not getattr(objective, "needs_reference", True):
        return None
    reference = plugins.pm.hook.alignkit_build_reference(policy=policy, recipe=recipe)
    if reference is not None:
        return reference
    if recipe.reference.checkpoint is not None:
        model = build_policy(recipe, checkpoint=recipe.reference.checkpoint)
    else:
        model = copy.deepcopy(policy)
    return FrozenReference(model, train_mode=recipe.reference.train_mode)


def build_objective(recipe: Recipe, num_classes: int) -> Objective:
    component = plugins_for(recipe).get("objective", recipe.objective.name)
    try:
        return component.spec.factory(recipe.objective.config, num_classes=num_classes)
    except ValueError as exc:
        raise AlignkitError(f"objective '{recipe.objective.name}': {exc}") from None


def build_sampler(recipe: Recipe, null_label: int, rank: int = 0) -> PairSampler:
    """The pair sampler, its generator seeded with ``sampler.seed + rank`` (each process masks its
    own rows independently, as the official per-GPU ``torch.rand`` does)."""
    component = plugins_for(recipe).get("pair_sampler", recipe.sampler.name)
    generator = torch.Generator().manual_seed(recipe.sampler.seed + rank)
    return component.spec.factory(recipe.sampler.config, null_label=null_label, uncond_ratio=recipe.uncond_ratio,
                                  generator=generator)


def build_dataset(recipe: Recipe, tokenizer: Tokenizer | None = None) -> TokenDataset:
    """The ``[data]`` dataset, given the recipe's tokenizer (built here unless passed)."""
    if recipe.data is None:
        raise AlignkitError(f"{recipe.path}: data: training needs a [data] section")
    component = plugins_for(recipe).get("dataset", recipe.data.name)
    if tokenizer is None:
        tokenizer = build_tokenizer(recipe)
    return component.spec.factory(recipe.data.config, tokenizer=tokenizer)


def build_backend(recipe: Recipe):
    component = plugins_for(recipe).get("backend", recipe.distributed.backend)
    return component.spec.factory(recipe.distributed.config, recipe=recipe)
