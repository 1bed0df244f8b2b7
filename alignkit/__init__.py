"""alignkit: Condition Contrastive Alignment and its baselines for autoregressive image generators.

Public API::

    from alignkit import hookimpl, ObjectiveSpec, Objective, PairLogps  # writing a plugin
    from alignkit import load_recipe, load_policy, load_tokenizer      # using components
"""

from alignkit.components import (BackboneSpec, BackendSpec, ComponentSpec, DatasetSpec, EmptyConfig,
                                 FeatureExtractorSpec, ObjectiveSpec, PairSamplerSpec, TokenizerSpec)
from alignkit.errors import AlignkitError, CheckpointError, PluginError, RecipeError
from alignkit.hookspecs import hookimpl
from alignkit.interfaces import (ComponentConfig, ObjectiveOutput, Objective, PairLogps, PairSampler, Pairs,
                                 PolicyModel, ReferenceModel, Tokenizer)
from alignkit.logprobs import sequence_logps

__version__ = "0.1.0"

__all__ = [
    "AlignkitError", "BackboneSpec", "BackendSpec", "CheckpointError", "ComponentConfig", "ComponentSpec",
    "DatasetSpec", "EmptyConfig", "FeatureExtractorSpec", "Objective", "ObjectiveOutput", "ObjectiveSpec",
    "PairLogps", "PairSampler", "PairSamplerSpec", "Pairs", "PluginError", "PolicyModel", "RecipeError",
    "ReferenceModel", "Tokenizer", "TokenizerSpec", "get_plugins", "hookimpl", "load_policy", "load_recipe",
    "load_tokenizer", "sequence_logps",
]


def __getattr__(name: str):
    # Lazy, so that plugins importing `alignkit` do not import the recipe/plugin machinery in a cycle.
    if name in ("load_policy", "load_tokenizer"):
        from alignkit import api

        return getattr(api, name)
    if name == "load_recipe":
        from alignkit.recipe import load_recipe

        return load_recipe
    if name == "get_plugins":
        from alignkit.plugins import get_plugins

        return get_plugins
    raise AttributeError(f"module 'alignkit' has no attribute {name!r}")
