"""Built-in feature extractors for ``alignkit eval``: ``inception`` (the FID Inception-v3 of TTUR/ADM) and
``classifier`` (a small in-domain CNN for toy data such as digits).

Registered through the ``alignkit`` entry-point group exactly like a third-party plugin.
"""

from alignkit import FeatureExtractorSpec, hookimpl

from alignkit_metrics.classifier import ClassifierConfig, ClassifierExtractor, build_classifier, train_classifier
from alignkit_metrics.extractors import InceptionConfig, InceptionExtractor

__all__ = ["ClassifierConfig", "ClassifierExtractor", "InceptionConfig", "InceptionExtractor", "build_classifier",
           "train_classifier"]


@hookimpl
def alignkit_register_feature_extractors():
    return [
        FeatureExtractorSpec("inception", InceptionExtractor, InceptionConfig,
                             "FID Inception-v3 (TF 2015 graph): pool_3 for FID/P/R, mixed_6/conv for sFID, "
                             "logits for IS"),
        FeatureExtractorSpec("classifier", build_classifier, ClassifierConfig,
                             "small in-domain CNN classifier (digits …): features, class probabilities, accuracy"),
    ]
