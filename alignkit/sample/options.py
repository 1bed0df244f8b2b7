"""Sampling options: a backbone's ``sampling_options`` model applied to what the user or a recipe's
``[sample]`` section gives, with one clear error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from alignkit.errors import AlignkitError, RecipeError, validation_problems
from alignkit.interfaces import PolicyModel, SamplingOptions
from alignkit.recipe import Recipe


def sampling_options(policy: PolicyModel, options: Mapping[str, Any] | SamplingOptions | None) -> SamplingOptions:
    """``options`` validated by the backbone's ``sampling_options`` model; an unknown or bad option
    is one ``AlignkitError`` that lists what the backbone takes."""
    model = type(policy).sampling_options
    if isinstance(options, model):
        return options
    given = options.model_dump(exclude_unset=True) if isinstance(options, SamplingOptions) else dict(options or {})
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            flags = ", ".join(f"'{n}' (--{n.replace('_', '-')})" for n in unknown)
            raise AlignkitError(f"the {type(policy).__name__} backbone does not take the sampling option {flags}; "
                                f"it takes: {', '.join(model.model_fields)}") from None
        raise AlignkitError(f"sampling option {validation_problems(exc)}") from None


def recipe_sampling(recipe: Recipe, policy: PolicyModel) -> dict[str, Any]:
    """The recipe's ``[sample]`` settings, its options checked against the backbone's ``sampling_options``."""
    try:
        sampling_options(policy, recipe.sample.model_extra or {})
    except AlignkitError as exc:
        raise RecipeError(recipe.path, "sample", str(exc)) from None
    return {k: v for k, v in recipe.settings("sample").items() if v is not None}
