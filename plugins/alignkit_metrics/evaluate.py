"""One evaluation: a sample batch against a reference batch with one feature extractor, ADM protocol."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from alignkit import FeatureExtractor
from alignkit.errors import AlignkitError
from alignkit_metrics.samples import SampleBatch, read_samples
from alignkit_metrics.features import compute_features
from alignkit_metrics.metrics import (DistanceDtype, feature_statistics, frechet_distance, inception_score,
                                         manifold_precision_recall, softmax)
from alignkit_metrics.reference import Reference, check_compatible, read_reference

METRICS = ("fid", "sfid", "is", "precision", "recall")


def evaluate(samples: str | os.PathLike | SampleBatch, ref: str | os.PathLike | Reference,
             extractor: FeatureExtractor, *, batch_size: int = 64, k: int = 3, split_size: int = 5000,
             use_ref_stats: bool = True, distance_dtype: DistanceDtype = "float16",
             progress: bool = True) -> dict[str, Any]:
    """FID, sFID, IS, precision and recall of ``samples`` against ``ref``, as the ADM evaluator computes them.

    - FID/sFID: sample statistics against the reference's stored ``mu``/``sigma`` (``mu_s``/``sigma_s``)
      when present, of the extractor's dimension and ``use_ref_stats``; else against statistics of the
      reference images' features.
    - IS: over the samples, chunks of ``split_size`` (when the extractor gives class scores).
    - Precision/recall: k-NN manifolds of reference-image and sample features (needs reference images).
    - Accuracy: when the samples carry ``labels`` and the extractor's classes are the dataset's labels.

    Returns a JSON-ready dict: every metric in ``METRICS`` (``None`` when it cannot be computed, with
    the reason in ``notes``), ``accuracy`` when computed, counts, how the reference statistics were
    obtained, and the extractor's ``describe()``. Nothing is cached on disk.
    """
    batch = samples if isinstance(samples, SampleBatch) else read_samples(samples)
    reference = ref if isinstance(ref, Reference) else read_reference(ref)
    check_compatible(batch, reference)
    extractor.check_images(tuple(batch.images.shape))
    if reference.images is not None:
        extractor.check_images(tuple(reference.images.shape))
    if len(batch) < 2:
        raise AlignkitError(f"samples {batch.path}: a covariance needs at least 2 images, got {len(batch)}")
    if reference.images is None and not use_ref_stats:
        raise AlignkitError(f"reference {reference.path}: has no images, and its stored statistics are not to be used")
    if reference.images is None:  # fail before hours of feature extraction
        for name, mu, dim in (("mu", reference.mu, extractor.feature_dim),
                              ("mu_s", reference.mu_s, extractor.spatial_dim)):
            if mu is not None and dim is not None and mu.shape[0] != dim:
                raise AlignkitError(f"reference {reference.path}: its stored '{name}' is {mu.shape[0]}-d but the "
                                    f"'{extractor.name}' extractor gives {dim}-d features, and it has no images to "
                                    "compute new statistics from (stored statistics fit only the network that made "
                                    "them)")
    notes: list[str] = []
    results: dict[str, Any] = {m: None for m in METRICS}

    feats = compute_features(extractor, batch.images, batch_size, progress, "samples")
    ref_feats = None
    if reference.images is not None:
        ref_feats = compute_features(extractor, reference.images, batch_size, progress, "reference")

    # FID and sFID ------------------------------------------------------------------------------
    stats_source = []
    for metric, key, stored in (("fid", "pool", (reference.mu, reference.sigma)),
                                ("sfid", "spatial", (reference.mu_s, reference.sigma_s))):
        if key not in feats:
            notes.append(f"{metric}: the '{extractor.name}' extractor gives no spatial features")
            continue
        dim = feats[key].shape[1]
        if len(batch) <= dim:
            notes.append(f"{metric}: {len(batch)} samples for {dim}-d features: the covariance is singular and the "
                         "value is not comparable to one from 50k samples")
        ref_stats, source = _reference_stats(metric, stored, ref_feats, key, dim, use_ref_stats, reference, notes)
        if ref_stats is None:
            continue
        stats_source.append(f"{metric}: {source}")
        results[metric] = frechet_distance(*feature_statistics(feats[key], f"sample {key} features"), *ref_stats)

    # IS ----------------------------------------------------------------------------------------
    probs = feats.get("probs")
    if probs is None and "logits" in feats:
        probs = softmax(feats["logits"])
    if probs is not None:
        results["is"] = inception_score(probs, split_size)
    else:
        reason = extractor.missing_classes_reason
        notes.append(f"is: the '{extractor.name}' extractor gives no class probabilities"
                     + (f": {reason}" if reason else ""))

    # precision / recall ------------------------------------------------------------------------
    if ref_feats is None:
        notes.append("precision/recall: the reference has no images (arr_0), only statistics; they need the reference "
                     "images' features (ADM's VIRTUAL_*.npz batches carry 10k images for this)")
    elif min(len(batch), len(ref_feats["pool"])) <= k:
        notes.append(f"precision/recall: need more than k = {k} images in both sets")
    else:
        results["precision"], results["recall"] = manifold_precision_recall(
            ref_feats["pool"], feats["pool"], k=k, dtype=distance_dtype, device=extractor.device)

    # accuracy ----------------------------------------------------------------------------------
    if batch.labels is not None and probs is not None and extractor.labels_are_classes:
        results["accuracy"] = float(np.mean(np.argmax(probs, axis=1) == batch.labels))

    results.update({
        "num_samples": len(batch),
        "num_reference_images": None if reference.images is None else int(reference.images.shape[0]),
        "reference_statistics": "; ".join(stats_source) or None,
        "features": extractor.name,
        "extractor": extractor.describe(),
        "protocol": {"evaluator": "adm", "k": k, "is_split_size": split_size, "distance_dtype": distance_dtype},
        "samples": str(batch.path) if batch.path else None,
        "reference": str(reference.path) if reference.path else None,
        "notes": notes,
    })
    return results


def _reference_stats(metric: str, stored: tuple[np.ndarray | None, np.ndarray | None],
                     ref_feats: dict[str, np.ndarray] | None, key: str, dim: int, use_ref_stats: bool,
                     reference: Reference, notes: list[str]) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The reference (μ, Σ) for one metric and where it came from, or ``None`` with a note."""
    mu, sigma = stored
    if mu is not None and use_ref_stats:
        if mu.shape[0] == dim:
            return (mu, sigma), "stored in the reference"
        notes.append(f"{metric}: the stored statistics are {mu.shape[0]}-d, the extractor's features {dim}-d; used "
                     "statistics of the reference images instead")
    if ref_feats is None:
        notes.append(f"{metric}: the reference has no images and no stored {metric} statistics")
        return None, ""
    if key not in ref_feats:
        return None, ""
    if len(ref_feats[key]) <= dim:
        notes.append(f"{metric}: {len(ref_feats[key])} reference images for {dim}-d features: singular covariance")
    return feature_statistics(ref_feats[key], f"reference {key} features"), "computed from the reference images"
