"""The statistics of randomized smoothing as pure functions: no sampling, no torch.

Sampling lives in `rs.core`; these functions turn counts and sums into bounds, radii, certified
accuracy and ACR (PAPER.md sections 1, 2 and 6).
"""
import math

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

# radii at which the MACER paper (and its code's summary) reports certified accuracy
GRID = tuple(0.25 * i for i in range(10))


def lower_confidence_bound(nA, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson lower bound on pA from nA successes in n draws.

    Cohen et al. 2019, CERTIFY step 3: equals statsmodels'
    `proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]`, i.e. the alpha quantile of
    Beta(nA, n - nA + 1), and 0 when nA = 0.
    """
    if nA == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, nA, n - nA + 1))


def bernstein_lower_bound(sum_z, sum_z2, n, alpha):
    """Empirical Bernstein lower bound on E[z_A] from n samples of z_A in [0, 1].

    MACER appendix A (the public code's soft mode), PAPER.md section 2:
    `mean - sqrt(2 * S2 * ln(2/alpha) / n) - 7 * ln(2/alpha) / (3 * (n - 1))`, with S2 the sample
    variance `(sum z^2 - (sum z)^2 / n) / (n - 1)` clipped at 0. With n < 2 there is no bound: -inf.
    """
    if n < 2:
        return -math.inf
    mean = sum_z / n
    s2 = max((sum_z2 - sum_z * sum_z / n) / (n - 1), 0.0)
    t = math.log(2.0 / alpha)
    return mean - math.sqrt(2.0 * s2 * t / n) - 7.0 * t / (3.0 * (n - 1))


def radius(sigma, p_lower):
    """Certified L2 radius `sigma * Phi^-1(pA_lower)` (Cohen et al. 2019, Theorem 1 with pB = 1 - pA)."""
    return float(sigma * norm.ppf(p_lower))


def binomial_pvalue(nA, nB):
    """Two-sided p-value of nA successes in nA + nB draws at p = 1/2 (Cohen et al. 2019, PREDICT)."""
    return float(binomtest(int(nA), int(nA + nB), 0.5).pvalue)


def certified_radii(radius, correct):
    """The MACER result encoding (PAPER.md section 6): the radius where correct, -1 elsewhere.

    `radius` and `correct` are arrays over images; a wrong or abstained image becomes -1 whatever
    radius it carried (a wrong prediction can carry a positive one in the community's logs).
    """
    radius = np.asarray(radius, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    return np.where(correct, radius, -1.0)


def certified_accuracy(radii, grid=GRID):
    """Fraction of images certified correct with radius >= r, for each r in `grid`.

    `radii` in the MACER encoding (-1 for wrong or abstained), so every wrong image counts as
    below every r >= 0. PAPER.md section 6.
    """
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    grid = np.asarray(grid, dtype=np.float64)
    if radii.size == 0:
        return np.full(grid.shape, np.nan)
    return (radii[None, :] >= grid[:, None]).mean(axis=1)


def acr(radii):
    """Average certified radius: sum of the radii of correct images over all images (PAPER.md section 6)."""
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    if radii.size == 0:
        return float('nan')
    return float(np.clip(radii, 0.0, None).sum() / radii.size)
