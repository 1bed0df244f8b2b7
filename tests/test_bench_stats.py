"""The bench's statistics against math: t intervals, unbiased KID, verdicts."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from alignkit_bench.stats import Estimate, claim, combine, interval
from alignkit_metrics.metrics import kid


def test_a_t_interval_by_hand_and_shrinking_with_more_seeds():
    e = interval([1.0, 2.0, 3.0])
    half = scipy_stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # sd of (1, 2, 3) is 1
    assert (e.mean, e.lo, e.hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    rng = np.random.default_rng(0)
    widths = {n: np.mean([interval(rng.normal(0, 1, n)).half_width for _ in range(200)]) for n in (3, 10, 100)}
    assert widths[3] > widths[10] > widths[100]
    assert widths[100] == pytest.approx(1.984 / np.sqrt(100), rel=0.05)  # t(0.975, 99) · σ / √n
    covered = np.mean([(lambda e: e.lo <= 0 <= e.hi)(interval(rng.normal(0, 1, 3))) for _ in range(2000)])
    assert covered == pytest.approx(0.95, abs=0.02)
    assert interval([4.0]) == Estimate(4.0, 4.0, 4.0, 1)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    same = [kid(rng.normal(size=(50, 8)), rng.normal(size=(50, 8))) for _ in range(400)]
    spread = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * spread  # FID would be biased upward here
    shifted = [kid(rng.normal(size=(50, 8)), rng.normal(0.5, 1, size=(50, 8))) for _ in range(50)]
    assert np.mean(shifted) > 20 * spread


def test_kid_by_hand_on_two_tiny_sets():
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])
    k = lambda x, y: (x @ y / 2 + 1) ** 3  # noqa: E731
    expected = 2 * k(a[0], a[1]) / 2 + 2 * k(b[0], b[1]) / 2 - 2 * np.mean([k(x, y) for x in a for y in b])
    assert kid(a, b) == pytest.approx(expected)


def test_verdicts_are_unresolved_when_intervals_overlap():
    low, high, wide = Estimate(1.0, 0.9, 1.1, 3), Estimate(2.0, 1.9, 2.1, 3), Estimate(1.5, 0.5, 2.5, 3)
    assert claim(low, "<", high) == "holds" and claim(high, "<", low) == "fails"
    assert claim(low, "<", wide) == "unresolved" and claim(wide, ">", high) == "unresolved"
    assert combine(["holds", "holds"]) == "holds" and combine(["holds", "unresolved"]) == "unresolved"
    assert combine(["unresolved", "fails"]) == "fails"
