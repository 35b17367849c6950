"""The statistics of randomized smoothing as pure functions: no sampling, no torch.

Sampling lives in `rs.core`; these functions turn counts and sums into bounds, radii, certified
accuracy and ACR (docs/METHOD.md: "Certifying an image", "Protocol and metrics").
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

# the two certificates: hard (Cohen et al.: counts, Clopper-Pearson) and soft (MACER: scores, Bernstein);
# `--mode both` gives both from the same samples
MODES = ('hard', 'soft')
MODE_CHOICES = MODES + ('both',)


def modes_of(mode: str) -> Tuple[str, ...]:
    """The modes a `--mode` value certifies, hard first."""
    if mode not in MODE_CHOICES:
        raise ValueError(f'mode must be one of {", ".join(MODE_CHOICES)}, got {mode!r}')
    return MODES if mode == 'both' else (mode,)


# radii at which the MACER paper (and its code's summary) reports certified accuracy
GRID = tuple(0.25 * i for i in range(10))


def lower_confidence_bound(nA: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on pA from nA successes in n draws.

    Cohen et al. 2019, CERTIFY step 3: equals statsmodels'
    `proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]`, i.e. the alpha quantile of
    Beta(nA, n - nA + 1), and 0 when nA = 0.
    """
    if nA == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, nA, n - nA + 1))


def upper_confidence_bound(nA: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on pA from nA successes in n draws: the
    1 - alpha quantile of Beta(nA + 1, n - nA), and 1 when nA = n (the mirror of the lower bound)."""
    if nA >= n:
        return 1.0
    return float(beta_dist.ppf(1.0 - alpha, nA + 1, n - nA))


def bernstein_lower_bound(sum_z: float, sum_z2: float, n: int, alpha: float) -> float:
    """Empirical Bernstein lower bound on E[z_A] from n samples of z_A in [0, 1].

    MACER appendix A (the public code's soft mode), docs/METHOD.md, "Soft certificates":
    `mean - sqrt(2 * S2 * ln(2/alpha) / n) - 7 * ln(2/alpha) / (3 * (n - 1))`, with S2 the sample
    variance `(sum z^2 - (sum z)^2 / n) / (n - 1)` clipped at 0. With n < 2 there is no bound: -inf.
    """
    if n < 2:
        return -math.inf
    mean = sum_z / n
    s2 = max((sum_z2 - sum_z * sum_z / n) / (n - 1), 0.0)
    t = math.log(2.0 / alpha)
    return mean - math.sqrt(2.0 * s2 * t / n) - 7.0 * t / (3.0 * (n - 1))


def bernstein_upper_bound(sum_z: float, sum_z2: float, n: int, alpha: float) -> float:
    """The empirical Bernstein upper bound on E[z] from n samples in [0, 1]: the mirror of
    `bernstein_lower_bound` (mean + the same two terms); +inf with n < 2."""
    if n < 2:
        return math.inf
    return 2.0 * sum_z / n - bernstein_lower_bound(sum_z, sum_z2, n, alpha)


def radius(sigma: float, p_lower: float) -> float:
    """Certified L2 radius `sigma * Phi^-1(pA_lower)` (Cohen et al. 2019, Theorem 1 with pB = 1 - pA)."""
    return float(sigma * norm.ppf(p_lower))


def binomial_pvalue(nA: int, nB: int) -> float:
    """Two-sided p-value of nA successes in nA + nB draws at p = 1/2 (Cohen et al. 2019, PREDICT)."""
    return float(binomtest(int(nA), int(nA + nB), 0.5).pvalue)


def certified_radii(radius: ArrayLike, correct: ArrayLike) -> np.ndarray:
    """The MACER result encoding (docs/METHOD.md, "Protocol and metrics"): the radius where correct, -1 elsewhere.

    `radius` and `correct` are arrays over images; a wrong or abstained image becomes -1 whatever
    radius it carried (a wrong prediction can carry a positive one in the community's logs).
    """
    radius = np.asarray(radius, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    return np.where(correct, radius, -1.0)


def certified_accuracy(radii: ArrayLike, grid: ArrayLike = GRID) -> np.ndarray:
    """Fraction of images certified correct with radius >= r, for each r in `grid`.

    `radii` in the MACER encoding (-1 for wrong or abstained), so every wrong image counts as
    below every r >= 0. docs/METHOD.md, "Protocol and metrics".
    """
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    grid = np.asarray(grid, dtype=np.float64)
    if radii.size == 0:
        return np.full(grid.shape, np.nan)
    return (radii[None, :] >= grid[:, None]).mean(axis=1)


def acr(radii: ArrayLike) -> float:
    """Average certified radius: sum of the radii of correct images over all images (docs/METHOD.md, "Protocol and metrics")."""
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    if radii.size == 0:
        return float('nan')
    return float(np.clip(radii, 0.0, None).sum() / radii.size)


# --- certificates from their sufficient statistics --------------------------------------------------

BOUNDS = {'hard': ('clopper-pearson', 'bernstein'), 'soft': ('bernstein',)}


@dataclass(frozen=True)
class Evidence:
    """What one mode's certificate of one image is computed from: its sufficient statistics.

    hard: cAHat (the most frequent class of the n0 selection draws, whose counts are `counts0`) and
    nA, the count of cAHat among n fresh draws. soft: cAHat (the largest summed score of the
    selection draws) and `sum`, `sum_sq`, the sum and sum of squares of softmax(beta * f)[cAHat] over
    the n draws. `early`: the image was abstained by the early test (`n` is then its M draws, which
    never give a certificate).
    """
    mode: str
    cAHat: int
    n: int
    nA: Optional[int] = None
    sum: Optional[float] = None
    sum_sq: Optional[float] = None
    counts0: Optional[Tuple[int, ...]] = None
    early: bool = False

    def lower_bound(self, alpha: float, bound: Optional[str] = None) -> float:
        """pABar: the one-sided (1 - alpha) lower confidence bound on the selected class's probability.

        bound: 'clopper-pearson' (hard's default, Cohen et al.'s CERTIFY) or 'bernstein' (soft's, MACER
        appendix A; for hard counts it is the Bernstein bound of 0/1 samples, whose sum of squares is nA).
        """
        bound = bound or BOUNDS[self.mode][0]
        if bound not in BOUNDS[self.mode]:
            raise ValueError(f'{self.mode} statistics allow the bounds {", ".join(BOUNDS[self.mode])}, not {bound}')
        if self.mode == 'hard':
            if bound == 'clopper-pearson':
                return lower_confidence_bound(self._count(), self.n, alpha)
            return bernstein_lower_bound(self._count(), self._count(), self.n, alpha)
        return bernstein_lower_bound(*self._sums(), self.n, alpha)

    def upper_bound(self, alpha: float) -> float:
        """The mirror upper bound of the default bound: the early test abstains when it is below 1/2."""
        if self.mode == 'hard':
            return upper_confidence_bound(self._count(), self.n, alpha)
        return bernstein_upper_bound(*self._sums(), self.n, alpha)

    def _count(self) -> int:
        if self.nA is None:
            raise ValueError('hard evidence without its count nA')
        return self.nA

    def _sums(self) -> Tuple[float, float]:
        if self.sum is None or self.sum_sq is None:
            raise ValueError('soft evidence without its sums')
        return self.sum, self.sum_sq


ABSTAIN = -1


def certificate(evidence: Evidence, sigma: float, alpha: float, bound: Optional[str] = None) -> Tuple[int, float]:
    """(prediction, radius) from the statistics: Cohen et al. 2019, CERTIFY, step 4 (and its soft form).

    If pABar < 1/2, abstain (-1, radius 0); else cAHat with radius sigma * Phi^-1(pABar). An early
    abstention stays one: its M draws were a test, not an estimate.
    """
    if evidence.early:
        return ABSTAIN, 0.0
    pABar = evidence.lower_bound(alpha, bound)
    if pABar < 0.5:
        return ABSTAIN, 0.0
    return evidence.cAHat, radius(sigma, pABar)
