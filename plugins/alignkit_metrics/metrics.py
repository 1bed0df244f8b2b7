"""The ADM evaluator's metrics on feature arrays: Fréchet distance, Inception Score, precision/recall.

Formulas follow ``openai/guided-diffusion/evaluations/evaluator.py`` (itself TTUR's FID, the
improved-gan Inception Score and Kynkäänniemi et al. 2019's k-NN manifolds); ``specs/field-notes.md``
§D lists them. Only numpy, scipy and torch; nothing here knows about images or networks.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.special
import torch

from alignkit.errors import AlignkitError

FALLBACK_EPS = 1e-6
"""Added to both covariance diagonals when ``sqrtm(Σ₁Σ₂)`` is not finite (TTUR/ADM)."""

IMAG_ATOL = 1e-3
"""Largest imaginary part tolerated on the diagonal of ``sqrtm(Σ₁Σ₂)`` before the result is refused."""


def feature_statistics(features_ND: np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """``(μ, Σ)`` of ``(N, D)`` features: the mean and ``np.cov(rowvar=False)`` (divides by N − 1), in float64.

    Raises ``AlignkitError`` with fewer than 2 rows (no covariance). With N ≤ D the covariance is
    singular; the Fréchet distance still works (its 1e-6·I fallback), but is not comparable to a
    50k-sample number; callers note it.
    """
    features_ND = np.asarray(features_ND)
    if features_ND.ndim != 2:
        raise AlignkitError(f"{what}: expected an (N, D) array, got shape {features_ND.shape}")
    if features_ND.shape[0] < 2:
        raise AlignkitError(f"{what}: a covariance needs at least 2 images, got {features_ND.shape[0]}")
    features_ND = features_ND.astype(np.float64, copy=False)
    if not np.isfinite(features_ND).all():
        raise AlignkitError(f"{what}: the features contain NaN or inf (a broken extractor or input?)")
    return features_ND.mean(axis=0), np.cov(features_ND, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm(a, disp=False)[0]``: the same square root on SciPy versions where ``disp`` is
    deprecated (1.16, 1.17) or gone; ``disp`` only ever changed what is printed and returned beside it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # from SciPy's error estimate of a non-finite root
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        try:
            result = scipy.linalg.sqrtm(a, disp=False)
        except TypeError:  # SciPy >= 1.18: no `disp`
            result = scipy.linalg.sqrtm(a)
    # (root, error estimate), except that SciPy 1.17 returns the bare root for 1×1 input
    return np.atleast_2d(result[0] if isinstance(result, tuple) else result)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FALLBACK_EPS) -> float:
    """``‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂)``, exactly as TTUR and the ADM evaluator compute it.

    ``√(Σ₁Σ₂)`` is ``scipy.linalg.sqrtm`` of the product. If it is not finite, ``eps·I`` is added to
    both covariances and it is taken again (a ``RuntimeWarning`` says so). A complex result is
    accepted when every diagonal imaginary part is below 1e-3 (numerical noise) and its real part
    used; otherwise ``AlignkitError``. ADM passes the sample statistics as (μ₁, Σ₁), the reference as
    (μ₂, Σ₂); the value is symmetric up to rounding.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise AlignkitError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                            f"{sigma2.shape} (features from different extractors?)")
    for name, value in (("mu", mu1), ("sigma", sigma1), ("reference mu", mu2), ("reference sigma", sigma2)):
        if not np.isfinite(value).all():
            raise AlignkitError(f"{name} contains NaN or inf")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: sqrtm(Σ₁Σ₂) is not finite (singular product); adding {eps:g}·I to both "
                      "covariances, as TTUR/ADM do", RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise AlignkitError("Fréchet distance: sqrtm(Σ₁Σ₂) is not finite even after adding "
                                f"{eps:g}·I to the covariances")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise AlignkitError(f"Fréchet distance: sqrtm(Σ₁Σ₂) has an imaginary component of "
                                f"{np.max(np.abs(covmean.imag)):.3g} (above {IMAG_ATOL:g}); are both "
                                "covariances symmetric positive semi-definite?")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(probs_NC: np.ndarray, split_size: int = 5000) -> float:
    """The ADM (improved-gan) Inception Score of class probabilities ``p(y|x)``, ``(N, C)``.

    Rows are cut in order into chunks of ``split_size`` (the last may be shorter); per chunk the score
    is ``exp(mean_x KL(p(y|x) ‖ p̄(y)))`` with ``p̄`` the chunk's mean row; the result is the mean over
    chunks (ADM prints no standard deviation). ``0·log 0`` counts as 0, so one-hot rows are allowed
    (ADM's float32 softmax never gives exact zeros; for positive rows the two agree).
    """
    probs_NC = np.asarray(probs_NC, np.float64)
    if probs_NC.ndim != 2 or probs_NC.shape[0] == 0:
        raise AlignkitError(f"inception score: expected (N, C) probabilities with N ≥ 1, got shape {probs_NC.shape}")
    if split_size < 1:
        raise ValueError(f"split_size must be positive, got {split_size}")
    if (probs_NC < 0).any() or not np.isfinite(probs_NC).all():
        raise AlignkitError("inception score: probabilities must be finite and non-negative")
    scores = []
    for start in range(0, len(probs_NC), split_size):
        part = probs_NC[start:start + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p‖p̄) = Σ p log p − Σ p log p̄, with 0·log 0 = 0 on both terms (p̄ = 0 implies p = 0).
        kl = (scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


def softmax(logits_NC: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    logits_NC = np.asarray(logits_NC, np.float64)
    shifted = logits_NC - logits_NC.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------- precision / recall

DistanceDtype = Literal["float16", "float32"]


def _squared_distances(u_MD: torch.Tensor, v_ND: torch.Tensor, dtype: DistanceDtype) -> torch.Tensor:
    """``max(‖u‖² − 2 u·v + ‖v‖², 0)`` for every pair, float32 ``(M, N)``.

    ``"float16"`` reproduces ADM's DistanceBlock: inputs and each intermediate rounded to half precision
    (sums and matrix products accumulate in float32, as GPU half kernels do), recomputed in float32
    when any distance overflows half precision. ``"float32"`` computes everything in float32.
    """
    if dtype == "float16":
        u16, v16 = u_MD.half().float(), v_ND.half().float()
        norm_u = (u16 * u16).half().float().sum(1).half().float()
        norm_v = (v16 * v16).half().float().sum(1).half().float()
        cross = (u16 @ v16.T).half().float()
        d = ((norm_u[:, None] - (2 * cross).half().float()).half().float() + norm_v[None, :]).half()
        d = torch.clamp(d, min=0).float()
        if torch.isfinite(d).all():
            return d
    norm_u = (u_MD * u_MD).sum(1)
    norm_v = (v_ND * v_ND).sum(1)
    return torch.clamp(norm_u[:, None] - 2 * (u_MD @ v_ND.T) + norm_v[None, :], min=0)


def manifold_radii(features_ND: np.ndarray | torch.Tensor, k: int = 3, batch_size: int = 1024,
                   dtype: DistanceDtype = "float16", device: str | torch.device = "cpu") -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour in its own set, ``(N,)`` float32.

    The point itself is included at distance ~0 (index 0 of the sorted row), so this is the k-th *other*
    point, as ADM's ``ManifoldEstimator(nhood_sizes=(3,))``. Rows are processed ``batch_size`` at a time
    against all N points: memory ``batch_size × N`` floats.
    """
    if isinstance(features_ND, torch.Tensor):
        feats = features_ND.to(device=device, dtype=torch.float32)
    else:
        feats = torch.as_tensor(np.asarray(features_ND, np.float32), device=device)
    n = feats.shape[0]
    if n <= k:
        raise AlignkitError(f"precision/recall with k = {k} needs more than {k} points per set, got {n}")
    radii = torch.empty(n, dtype=torch.float32, device=device)
    for start in range(0, n, batch_size):
        d = _squared_distances(feats[start:start + batch_size], feats, dtype)
        radii[start:start + batch_size] = torch.kthvalue(d, k + 1, dim=1).values
    return radii


def manifold_precision_recall(real_ND: np.ndarray, fake_MD: np.ndarray, k: int = 3, batch_size: int = 1024,
                              dtype: DistanceDtype = "float16", device: str | torch.device = "cpu"
                              ) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as the ADM evaluator computes them.

    ``precision = mean_{g ∈ fake} 1[∃ r ∈ real: d(g, r) ≤ radius_k(r)]`` and
    ``recall = mean_{r ∈ real} 1[∃ g ∈ fake: d(r, g) ≤ radius_k(g)]`` with squared Euclidean
    distances and ``manifold_radii``. Batched over rows, so 10k × 10k runs in a few hundred MB.
    ``dtype="float16"`` (default) rounds distances to half precision like ADM's TensorFlow graph;
    ``"float32"`` does not (differences are in the third decimal at most). ``device`` may be a GPU.
    """
    real = torch.as_tensor(np.asarray(real_ND, np.float32), device=device)
    fake = torch.as_tensor(np.asarray(fake_MD, np.float32), device=device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise AlignkitError(f"precision/recall: feature shapes do not match: {tuple(real.shape)} vs "
                            f"{tuple(fake.shape)}")
    radii_real = manifold_radii(real, k, batch_size, dtype, device)
    radii_fake = manifold_radii(fake, k, batch_size, dtype, device)
    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)  # precision
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=device)  # recall
    for start in range(0, real.shape[0], batch_size):
        d = _squared_distances(real[start:start + batch_size], fake, dtype)  # (rows of real, all fake)
        fake_in_real |= (d <= radii_real[start:start + batch_size, None]).any(dim=0)
        real_in_fake[start:start + batch_size] = (d <= radii_fake[None, :]).any(dim=1)
    return float(fake_in_real.double().mean().cpu()), float(real_in_fake.double().mean().cpu())


def kid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD² between two feature sets
    (rows are samples) with the polynomial kernel k(x, y) = (xᵀy / d + 1)³, d the feature dimension.
    Unlike FID it has no bias at small N: two samples of one distribution give 0 on average."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of shapes {a.shape} and {b.shape} do not fit")
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    if m < 2 or n < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())
