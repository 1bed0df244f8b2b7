"""The ADM metrics against answers known in closed form."""

import numpy as np
import pytest
import scipy.linalg

from alignkit import AlignkitError
from alignkit_metrics.metrics import (feature_statistics, frechet_distance, inception_score, manifold_precision_recall,
                                         manifold_radii, softmax)


def random_spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


# ------------------------------------------------------------------------------ Fréchet distance


def test_frechet_diagonal_covariances_closed_form():
    # Commuting (diagonal) covariances: Tr sqrt(S1 S2) = Σ sqrt(s1_i s2_i), so FID = |Δμ|² + Σ (√s1_i − √s2_i)².
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_commuting_full_covariances():
    # Same eigenvectors Q: S1 = Q diag(a) Qᵀ, S2 = Q diag(b) Qᵀ -> the eigenvalue formula.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    a, b = rng.uniform(0.5, 2, 12), rng.uniform(0.5, 2, 12)
    mu = rng.standard_normal(12)
    got = frechet_distance(mu, q @ np.diag(a) @ q.T, mu + 1, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(12 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-8)


def test_frechet_general_gaussians_equal_wasserstein2():
    # For any SPD pair, Tr sqrt(S1 S2) = Tr sqrt(S1^½ S2 S1^½) (the W2 distance between Gaussians).
    rng = np.random.default_rng(2)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20, scale=2.0)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    r1 = scipy.linalg.sqrtm(s1).real
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_frechet_one_dimension():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + (2 - 3) ** 2)


def test_frechet_fallback_adds_eps_identity():
    # Σ₁Σ₂ = [[0, 1], [0, 0]] has no square root (sqrtm gives inf), so the 1e-6·I retry must run:
    # (I + εI)(N + εI) = (1+ε)[[ε, 1], [0, ε]], whose root has trace 2·sqrt(ε(1+ε)).
    eps = 1e-6
    sigma1, sigma2 = np.eye(2), np.array([[0.0, 1.0], [0.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="adding 1e-06"):
        got = frechet_distance(np.zeros(2), sigma1, np.zeros(2), sigma2)
    assert got == pytest.approx(2 + 0 - 2 * 2 * np.sqrt(eps * (1 + eps)), rel=1e-9)


def test_frechet_rejects_large_imaginary_part_and_mismatches():
    with pytest.raises(AlignkitError, match="imaginary component"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))  # sqrtm(-I) = i·I
    with pytest.raises(AlignkitError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(AlignkitError, match="NaN"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))


def test_frechet_of_sample_statistics_matches_closed_form():
    # Statistics of many samples from two Gaussians give (nearly) the analytic distance.
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, (100_000, 3))
    b = rng.normal(0.5, 2, (100_000, 3))
    got = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert got == pytest.approx(3 * 0.25 + 3 * (1 - 2) ** 2, abs=0.05)


def test_feature_statistics():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (6, 6)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)  # unbiased, N − 1
    with pytest.raises(AlignkitError, match="at least 2 images, got 1"):
        feature_statistics(x[:1])
    with pytest.raises(AlignkitError, match=r"expected an \(N, D\) array"):
        feature_statistics(x[0])


# ------------------------------------------------------------------------------ Inception Score


def test_inception_score_one_hot_uniform_is_num_classes():
    for c in (2, 10, 1000):
        probs = np.eye(c)[np.arange(5 * c) % c]
        assert inception_score(probs) == pytest.approx(c, rel=1e-12)


def test_inception_score_identical_rows_is_one():
    row = softmax(np.random.default_rng(5).standard_normal((1, 30)))
    assert inception_score(np.repeat(row, 100, axis=0)) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_chunks_in_order_and_averages():
    two = np.eye(4)[np.arange(4) % 2]   # a chunk using 2 of 4 classes: scores 2
    four = np.eye(4)[np.arange(4) % 4]  # a chunk using all 4: scores 4
    probs = np.concatenate([two, four])
    assert inception_score(probs, split_size=4) == pytest.approx(3.0)
    # one chunk of all 8 rows: p̄ = (3/8, 3/8, 1/8, 1/8) and KL(one-hot_j ‖ p̄) = −log p̄_j
    rows = probs.argmax(1)
    p_bar = np.array([3, 3, 1, 1]) / 8
    assert inception_score(probs, split_size=5000) == pytest.approx(np.exp(np.mean(-np.log(p_bar[rows]))))
    # a shorter last chunk counts as a chunk of its own: 4 + 4 + 2 rows
    probs10 = np.concatenate([four, four, np.eye(4)[:2]])
    assert inception_score(probs10, split_size=4) == pytest.approx((4 + 4 + 2) / 3)


def test_inception_score_matches_direct_kl_formula():
    probs = softmax(np.random.default_rng(6).standard_normal((300, 7)) * 3)
    p_bar = probs.mean(0)
    expected = np.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(p_bar)), axis=1)))
    assert inception_score(probs) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------ precision / recall


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_precision_recall_identical_sets(dtype):
    x = np.random.default_rng(7).standard_normal((200, 16))
    assert manifold_precision_recall(x, x.copy(), dtype=dtype) == (1.0, 1.0)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_precision_recall_far_apart_clusters(dtype):
    rng = np.random.default_rng(8)
    real = rng.standard_normal((150, 8))
    fake = rng.standard_normal((120, 8)) + 100.0
    assert manifold_precision_recall(real, fake, dtype=dtype) == (0.0, 0.0)


def test_precision_recall_half_the_modes_exact():
    # Four far-apart modes; the fakes are exactly the real points of two of them.
    rng = np.random.default_rng(9)
    centres = np.array([[0, 0], [50, 0], [0, 50], [50, 50]], dtype=float)
    real = np.concatenate([c + rng.standard_normal((40, 2)) for c in centres])
    fake = real[:80]  # modes 0 and 1
    precision, recall = manifold_precision_recall(real, fake)
    assert precision == 1.0 and recall == 0.5


def test_precision_recall_half_the_modes_sampled():
    rng = np.random.default_rng(10)
    centres = np.array([[0, 0], [30, 0], [0, 30], [30, 30]], dtype=float)
    real = np.concatenate([c + rng.standard_normal((500, 2)) for c in centres])
    fake = np.concatenate([c + rng.standard_normal((500, 2)) for c in centres[:2]])
    precision, recall = manifold_precision_recall(real, fake)
    assert precision == pytest.approx(1.0, abs=0.02)
    assert recall == pytest.approx(0.5, abs=0.02)


def test_radius_is_kth_other_point_and_boundary_counts():
    # 1-D real points 0, 1, 2, 3 (squared distances): the 3rd-nearest *other* point gives radii 9, 4, 4, 9.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(manifold_radii(real, k=3).numpy(), [9, 4, 4, 9])
    # A fake at −3 lies exactly on point 0's sphere (d = 9 ≤ 9, counts); one at −3.1 is outside all.
    fake = np.array([[-3.0], [-3.1], [-3.1], [-3.1]])
    precision, _ = manifold_precision_recall(real, fake)
    assert precision == 0.25


def test_precision_recall_batching_does_not_change_the_answer():
    rng = np.random.default_rng(11)
    real, fake = rng.standard_normal((97, 10)), rng.standard_normal((83, 10)) * 1.3 + 0.2
    full = manifold_precision_recall(real, fake, batch_size=4096)
    assert manifold_precision_recall(real, fake, batch_size=7) == full
    assert 0 < full[0] < 1 and 0 < full[1] < 1
    f32 = manifold_precision_recall(real, fake, dtype="float32")
    assert abs(f32[0] - full[0]) <= 0.03 and abs(f32[1] - full[1]) <= 0.03


def test_precision_recall_needs_more_than_k_points():
    with pytest.raises(AlignkitError, match="more than 3 points"):
        manifold_precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
