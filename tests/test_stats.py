"""The statistics against closed forms and against the libraries docs/METHOD.md names."""
import math

import numpy as np
import pytest
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint

from rs.stats import (GRID, acr, bernstein_lower_bound, binomial_pvalue, certified_accuracy, certified_radii,
                      lower_confidence_bound, radius)


@pytest.mark.parametrize('nA,n', [(1, 1), (5, 10), (99, 100), (100, 100), (0, 100), (50, 100), (99990, 100000),
                                  (100000, 100000), (1, 100000)])
@pytest.mark.parametrize('alpha', [0.001, 0.01, 0.05])
def test_clopper_pearson_equals_statsmodels(nA, n, alpha):
    expected = proportion_confint(nA, n, alpha=2 * alpha, method='beta')[0]
    assert lower_confidence_bound(nA, n, alpha) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize('n', [1, 10, 1000, 100000])
@pytest.mark.parametrize('alpha', [0.001, 0.05])
def test_clopper_pearson_closed_forms(n, alpha):
    # all n successes: the bound solves p^n = alpha
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(alpha ** (1.0 / n), rel=1e-10)
    assert lower_confidence_bound(0, n, alpha) == 0.0


@pytest.mark.parametrize('nA,n,alpha', [(7, 10, 0.05), (60, 100, 0.001), (812, 1000, 0.01)])
def test_clopper_pearson_is_the_exact_binomial_tail(nA, n, alpha):
    # the lower bound p is where P(X >= nA | p) = alpha
    p = lower_confidence_bound(nA, n, alpha)
    assert binom.sf(nA - 1, n, p) == pytest.approx(alpha, rel=1e-8)


def test_bernstein_against_its_formula():
    rng = np.random.default_rng(0)
    z = rng.beta(5, 2, size=5000)
    n, alpha = len(z), 0.001
    mean, var = z.mean(), z.var(ddof=1)
    t = math.log(2 / alpha)
    expected = mean - math.sqrt(2 * var * t / n) - 7 * t / (3 * (n - 1))
    assert bernstein_lower_bound(z.sum(), (z * z).sum(), n, alpha) == pytest.approx(expected, rel=1e-9)


def test_bernstein_zero_variance_and_too_few_samples():
    n, alpha = 1000, 0.001
    t = math.log(2 / alpha)
    # constant samples: the sample variance is 0 (rounding may make it slightly negative: clipped)
    assert bernstein_lower_bound(0.9 * n, 0.81 * n, n, alpha) == pytest.approx(0.9 - 7 * t / (3 * (n - 1)))
    assert bernstein_lower_bound(0.3, 0.09, 1, alpha) == -math.inf


@pytest.mark.parametrize('sigma', [0.12, 0.25, 0.5, 1.0])
def test_radius_is_sigma_times_inverse_normal_cdf(sigma):
    assert radius(sigma, 0.5) == 0.0
    assert radius(sigma, norm.cdf(1.0)) == pytest.approx(sigma)
    assert radius(sigma, 0.975) == pytest.approx(sigma * 1.959963984540054)
    assert radius(sigma, norm.cdf(-0.3)) == pytest.approx(-0.3 * sigma)


@pytest.mark.parametrize('nA,nB', [(60, 40), (10, 0), (50, 50), (31, 12)])
def test_binomial_pvalue_two_sided(nA, nB):
    n = nA + nB
    k = max(nA, nB)
    # p = 1/2 is symmetric: the two-sided p-value is twice the upper tail, capped at 1
    expected = min(1.0, 2 * binom.sf(k - 1, n, 0.5)) if nA != nB else 1.0
    assert binomial_pvalue(nA, nB) == pytest.approx(expected, rel=1e-10)


def test_certified_accuracy_and_acr_semantics():
    # correct at 0.3; correct at exactly 0.5; wrong with a positive radius; abstained; correct with radius 0
    r = certified_radii([0.3, 0.5, 0.9, 0.0, 0.0], [1, 1, 0, 0, 1])
    assert r.tolist() == [0.3, 0.5, -1.0, -1.0, 0.0]
    acc = certified_accuracy(r, GRID)
    assert acc[0] == pytest.approx(3 / 5)        # radius >= 0 counts the radius-0 image
    assert acc[1] == pytest.approx(2 / 5)        # >= 0.25
    assert acc[2] == pytest.approx(1 / 5)        # >= 0.5 includes the image at exactly 0.5
    assert acc[3] == 0.0
    assert acr(r) == pytest.approx((0.3 + 0.5) / 5)
    assert np.isnan(acr([]))
