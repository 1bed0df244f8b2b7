"""alignkit: Condition Contrastive Alignment and its successors for autoregressive image generators.

Public API::

    from alignkit import hookimpl, ObjectiveSpec, Objective, PairLogps  # writing a plugin
    from alignkit import load_recipe, load_policy, load_tokenizer      # using components
"""

from alignkit.api import load_policy, load_tokenizer
from alignkit.errors import AlignkitError, CheckpointError, PluginError, RecipeError
from alignkit.hookspecs import hookimpl
from alignkit.interfaces import (BackboneSpec, Backend, BackendSpec, ComponentConfig, ComponentSpec, DatasetSpec,
                                 EmptyConfig, FeatureExtractor, FeatureExtractorSpec, GenerationConfig, LogitsRequest,
                                 ModelShape, NonFiniteError, Objective, ObjectiveOutput, ObjectiveSpec, PairLogps,
                                 PairSampler, PairSamplerSpec, Pairs, PolicyModel, ReferenceModel, SamplingOptions,
                                 TokenDataset, TokenLogits, Tokenizer, TokenizerSpec)
from alignkit.logprobs import sequence_logps
from alignkit.plugins import get_plugins
from alignkit.recipe import load_recipe

__version__ = "0.1.0"

__all__ = [
    "AlignkitError", "BackboneSpec", "Backend", "BackendSpec", "CheckpointError", "ComponentConfig", "ComponentSpec",
    "DatasetSpec", "EmptyConfig", "FeatureExtractor", "FeatureExtractorSpec", "GenerationConfig", "LogitsRequest",
    "ModelShape", "NonFiniteError",
    "Objective", "ObjectiveOutput", "ObjectiveSpec", "PairLogps", "PairSampler", "PairSamplerSpec", "Pairs",
    "PluginError", "PolicyModel", "RecipeError", "ReferenceModel", "SamplingOptions", "TokenDataset", "Tokenizer",
    "TokenLogits", "TokenizerSpec", "get_plugins", "hookimpl", "load_policy", "load_recipe", "load_tokenizer", "sequence_logps",
]
