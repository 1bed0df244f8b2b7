"""The bench's statistics: intervals over seeds, KID, and verdicts that say ``unresolved`` when the
numbers cannot tell.

**Intervals** are Student-t intervals over seeds: mean ± t(0.975, n − 1) · sd / √n, with the sample
standard deviation (ddof 1). They capture what changes between seeds (fine-tuning data order, pair
sampling, sampling noise), not the error of the metric's estimator itself at the sample size.

KID, which the bench reports beside FID because FID is biased upward at its sample sizes, is
``alignkit_metrics.metrics.kid``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and its 95% interval (``lo == hi == mean`` for one seed)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The t interval of the mean of ``values`` (one value per seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, mean, mean, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size))


@dataclass(frozen=True)
class Verdict:
    name: str
    verdict: str  # "holds", "fails" or "unresolved"
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "verdict": self.verdict, "detail": self.detail}


def compare(a: Estimate, b: Estimate) -> str:
    """``"less"`` when a's interval lies below b's, ``"greater"`` above, else ``"overlap"``."""
    if a.hi < b.lo:
        return "less"
    if a.lo > b.hi:
        return "greater"
    return "overlap"


def combine(outcomes: Sequence[str]) -> str:
    """All parts hold: holds; any part fails: fails; otherwise unresolved."""
    if any(o == "fails" for o in outcomes):
        return "fails"
    return "holds" if all(o == "holds" for o in outcomes) else "unresolved"


def claim(a: Estimate, relation: str, b: Estimate) -> str:
    """The verdict on "a <relation> b" (relation ``<`` or ``>``) from the two intervals."""
    seen = compare(a, b)
    if seen == "overlap":
        return "unresolved"
    return "holds" if (seen == "less") == (relation == "<") else "fails"


def fmt(e: Estimate, digits: int = 2) -> str:
    """``mean ± half`` (or the mean alone for one seed)."""
    if e.n == 1:
        return f"{e.mean:.{digits}f}"
    return f"{e.mean:.{digits}f} ± {e.half_width:.{digits}f}"
