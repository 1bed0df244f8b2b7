"""Components of a run, built from a validated recipe (whose sections resolved their plugins once)."""

from __future__ import annotations

import copy
from os import PathLike

import torch

from alignkit.errors import AlignkitError
from alignkit.interfaces import (Backend, Objective, PairSampler, PolicyModel, ReferenceModel, TokenDataset,
                                 Tokenizer)
from alignkit.plugins import Plugins, get_plugins
from alignkit.recipe import Recipe
from alignkit.reference import FrozenReference


def plugins_for(recipe: Recipe) -> Plugins:
    return get_plugins(recipe.path)


def build_tokenizer(recipe: Recipe) -> Tokenizer | None:
    if recipe.tokenizer is None:
        return None
    return recipe.tokenizer.build(checkpoint=recipe.tokenizer.checkpoint)


def build_policy(recipe: Recipe, checkpoint: str | PathLike | None = None,
                 tokenizer: Tokenizer | None = None) -> PolicyModel:
    """The backbone with its weights (``checkpoint`` defaults to ``model.checkpoint``)."""
    if recipe.model.component.spec.tokenizer and tokenizer is None:
        tokenizer = build_tokenizer(recipe)
    checkpoint = checkpoint if checkpoint is not None else recipe.model.checkpoint
    return recipe.model.build(checkpoint=checkpoint, tokenizer=tokenizer)


def build_reference(policy: PolicyModel, recipe: Recipe) -> ReferenceModel | None:
    """A plugin's reference (``alignkit_build_reference``), else a frozen copy of the policy (or of
    ``reference.checkpoint``), in train or eval mode as the recipe says."""
    if not recipe.objective.component.spec.uses_reference:
        return None
    reference = plugins_for(recipe).pm.hook.alignkit_build_reference(policy=policy, recipe=recipe)
    if reference is not None:
        return reference
    if recipe.reference.checkpoint is not None:
        model = build_policy(recipe, checkpoint=recipe.reference.checkpoint)
    else:
        model = copy.deepcopy(policy)
    return FrozenReference(model, train_mode=recipe.reference.train_mode)


def build_objective(recipe: Recipe, policy: PolicyModel) -> Objective:
    objective = recipe.objective.build()
    objective.setup(policy)
    if "lambda_B" in objective.conditions and not policy.supports_lambda:
        raise AlignkitError(f"{recipe.path}: objective '{recipe.objective.name}' conditions the policy on a per-row λ "
                            "(lambda_range, beta_range): the model needs model.lambda_conditioning = true")
    return objective


def build_sampler(recipe: Recipe, null_label: int, rank: int = 0) -> PairSampler:
    """The pair sampler, its generator seeded with ``sampler.seed + rank`` (each process masks its
    own rows independently, as the official per-GPU ``torch.rand`` does)."""
    generator = torch.Generator().manual_seed(recipe.sampler.seed + rank)
    return recipe.sampler.build(null_label=null_label, uncond_ratio=recipe.uncond_ratio, generator=generator)


def build_dataset(recipe: Recipe, tokenizer: Tokenizer | None = None) -> TokenDataset:
    """The ``[data]`` dataset, given the recipe's tokenizer (built here unless passed)."""
    if recipe.data is None:
        raise AlignkitError(f"{recipe.path}: data: training needs a [data] section")
    if tokenizer is None:
        tokenizer = build_tokenizer(recipe)
    return recipe.data.build(tokenizer=tokenizer)


def build_backend(recipe: Recipe) -> Backend:
    return recipe.distributed.build(recipe=recipe)
