"""The contracts between the engine and its plugins, one module per kind of component.

Data flow of one alignment step::

    (tokens_BL, labels_B) --PairSampler--> Pairs (positive / negative labels, null-class mask)
    PolicyModel.logits on [x; x] with [c+; c-] --sequence_logps--> policy log-probs (2B,)
    ReferenceModel.sequence_logps on the same rows                 --> reference log-probs (2B,)
    Objective(PairLogps) --> ObjectiveOutput(loss, metrics)
"""

from alignkit.interfaces.backend import Backend, BackendSpec, NonFiniteError
from alignkit.interfaces.component import ComponentConfig, ComponentSpec, EmptyConfig
from alignkit.interfaces.data import DatasetSpec, TokenDataset, collate
from alignkit.interfaces.features import FeatureExtractor, FeatureExtractorSpec
from alignkit.interfaces.model import BackboneSpec, ModelShape, PolicyModel, ReferenceModel, SamplingOptions
from alignkit.interfaces.objective import (GenerationConfig, LogitsRequest, Objective, ObjectiveOutput, ObjectiveSpec,
                                           PairLogps, TokenLogits)
from alignkit.interfaces.pairs import Pairs, PairSampler, PairSamplerSpec
from alignkit.interfaces.tokenizer import Tokenizer, TokenizerSpec

SPEC_TYPES: dict[str, type[ComponentSpec]] = {
    spec.kind: spec for spec in (ObjectiveSpec, PairSamplerSpec, BackboneSpec, TokenizerSpec, DatasetSpec,
                                 FeatureExtractorSpec, BackendSpec)
}
"""Every kind of component, by its name in ``alignkit plugins``."""

__all__ = ["SPEC_TYPES", "BackboneSpec", "Backend", "BackendSpec", "ComponentConfig", "ComponentSpec", "DatasetSpec",
           "EmptyConfig", "FeatureExtractor", "FeatureExtractorSpec", "GenerationConfig", "LogitsRequest",
           "ModelShape", "NonFiniteError", "Objective",
           "ObjectiveOutput", "ObjectiveSpec", "PairLogps", "PairSampler", "PairSamplerSpec", "Pairs", "PolicyModel",
           "ReferenceModel", "SamplingOptions", "TokenDataset", "TokenLogits", "Tokenizer", "TokenizerSpec", "collate"]
