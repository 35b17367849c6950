"""Is one model better than another on these test images? Intervals over the images, and paired tests.

A certificate's alpha covers the noise drawn for each image. A certified accuracy or an ACR measured
on a few hundred test images has a second error of its own, the choice of those images from the test
distribution (a standard error of about 0.02 at a certified accuracy of 0.5 over 500 images), which
alpha says nothing about. This module gives it (docs/METHOD.md, "Comparing models"):

- one run: the certified accuracy at each radius with its exact (Clopper-Pearson) interval; the ACR
  and the accuracy under noise with a BCa bootstrap interval over the images (fixed seed);
- two runs on the same images (paired): the difference in certified accuracy with Newcombe's hybrid
  score interval for paired proportions, and the exact McNemar test on the images where the two
  disagree; the differences in ACR and in accuracy under noise with a paired BCa bootstrap interval;
  Holm's adjustment of several p-values;
- the coverage of these intervals, by simulation.

Reading the runs to compare (TSV logs, this project's JSON and statistics) and checking that they
certified the same images is `rs.runs`'s. numpy and scipy only. `python -m rs.compare` measures the
coverage of the intervals by simulation.
"""
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from rs.results import tsv_radii
from rs.runs import Run
from rs.stats import GRID, largest_radius

LEVEL = 0.95  # the default confidence level of every interval over the images
RESAMPLES = 2000  # bootstrap resamples at the least: an end varies by about 2 % of its width from seed to seed
SEED = 0  # the seed of the bootstrap and of the sign-flip draws: the same files always give the same numbers
TAIL_RESAMPLES = 20  # resamples beyond each end of a bootstrap interval, at the least (`resamples_for`)
MAX_RESAMPLES = 400_000  # a bootstrap interval that needs more is given as n/a
MIN_BOOTSTRAP = 10  # fewer images give no bootstrap interval: its ends would be a few images' values
EXACT_SIGN_FLIP = 20  # up to this many differing images, the sign-flip p-value enumerates every sign pattern
SIGN_FLIP_DRAWS = 100_000  # Monte Carlo draws beyond: the p-value's standard error is below 0.0007 at 0.05


# --- levels ------------------------------------------------------------------------------------------------

def check_level(level: float) -> float:
    """A confidence level strictly between 1/2 and 1 (an alpha typed for a level, 0.05, is refused)."""
    if not 0.5 < level < 1.0:
        raise ValueError(f'a confidence level lies strictly between 0.5 and 1 (0.95 for a 95 % interval), not '
                         f'{level!r}')
    return level


def format_level(level: float) -> str:
    """The level as a percentage with the digits it has: '95%', '99.9%', '99.95%' (never a rounded '100%')."""
    text = f'{100 * level:.10f}'.rstrip('0').rstrip('.')
    return f'{text}%'


def _tail(level: float) -> float:
    return (1.0 - check_level(level)) / 2.0


def resamples_for(level: float) -> int:
    """Bootstrap resamples for an interval at `level`: RESAMPLES, or more where the tail is so small that fewer
    than TAIL_RESAMPLES resamples would lie beyond an end (99.9 %: 40000)."""
    return max(RESAMPLES, int(math.ceil(TAIL_RESAMPLES / _tail(level))))


class Estimate(tuple):
    """(value, low, high) of a statistic, and `why` there is no interval (low and high None), else None."""

    def __new__(cls, value, low=None, high=None, why=None):
        out = tuple.__new__(cls, (value, low, high))
        out.why = why
        return out

    @property
    def value(self):
        return self[0]

    @property
    def low(self):
        return self[1]

    @property
    def high(self):
        return self[2]


# --- intervals and tests -------------------------------------------------------------------------------

def clopper_pearson(k, n, level: float = LEVEL) -> Tuple[np.ndarray, np.ndarray]:
    """Two-sided exact interval for a binomial proportion from k successes in n trials: (low, high).

    Clopper and Pearson (1934): low is the (1 - level) / 2 quantile of Beta(k, n - k + 1) (0 when
    k = 0), high the 1 - (1 - level) / 2 quantile of Beta(k + 1, n - k) (1 when k = n). Equals
    statsmodels' `proportion_confint(k, n, alpha=1 - level, method="beta")`. Its coverage is at least
    `level` for every proportion, at the ends too (k = n: [((1 - level) / 2)^(1/n), 1]). Vectorised over k
    and n.
    """
    a = _tail(level)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    low = np.where(k > 0, beta_dist.ppf(a, np.maximum(k, 1.0), n - k + 1.0), 0.0)
    high = np.where(k < n, beta_dist.ppf(1.0 - a, k + 1.0, np.maximum(n - k, 1.0)), 1.0)
    return low, high


def wilson(k, n, level: float = LEVEL) -> Tuple[np.ndarray, np.ndarray]:
    """Wilson's (1927) score interval for a binomial proportion: (low, high); the parts of `newcombe_paired`."""
    z = norm.ppf(1.0 - _tail(level))
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    centre = (k + z * z / 2.0) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4.0) / (n + z * z)
    return centre - half, centre + half


def newcombe_phi(both: int, a_only: int, b_only: int, neither: int) -> float:
    """The correlation of a paired 2 x 2 table with Newcombe's continuity correction (his method 10).

    With A, B, C, D = both, A only, B only, neither and N their sum: phi = X / sqrt((A+B)(C+D)(A+C)(B+D)),
    X = AD - BC - N/2 where AD - BC > N/2, 0 where 0 <= AD - BC <= N/2, AD - BC where it is negative (only a
    positive correlation is shrunk towards 0, as Newcombe 1998 and Fagerland, Lydersen and Laake 2017 give it;
    his Table II's worked examples need the negative one left as it is); 0 when a margin is empty."""
    n = both + a_only + b_only + neither
    margins = float(both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    if margins <= 0:
        return 0.0
    x = float(both) * neither - float(a_only) * b_only
    if x >= 0:
        x = max(x - n / 2.0, 0.0)
    return x / math.sqrt(margins)


def newcombe_paired(both: int, a_only: int, b_only: int, neither: int, level: float = LEVEL) -> Estimate:
    """The difference pA - pB of two proportions measured on the same n items, with its interval: (d, low, high).

    Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions
    based on paired data", method 10: from the Wilson intervals (lA, uA) and (lB, uB) of the two
    proportions and `newcombe_phi`, the continuity-corrected correlation of the 2 x 2 table,

        low  = d - sqrt((pA - lA)^2 - 2 phi (pA - lA)(uB - pB) + (uB - pB)^2)
        high = d + sqrt((uA - pA)^2 - 2 phi (uA - pA)(pB - lB) + (pB - lB)^2)

    with d = (a_only - b_only) / n. Where no item is discordant (the two agree on all n), the interval is
    widened, if need be, to +-q with q = 1 - ((1 - level) / 2)^(1/n), the exact upper bound on the share of
    discordant items (|pA - pB| can be no larger): never a zero-width interval claiming certainty, and
    never narrower than an exactly valid interval must be there.
    """
    n = both + a_only + b_only + neither
    if n <= 0:
        raise ValueError('no items to compare')
    ka, kb = both + a_only, both + b_only
    pa, pb = ka / n, kb / n
    (la, ua), (lb, ub) = (tuple(map(float, wilson(k, n, level))) for k in (ka, kb))
    phi = newcombe_phi(both, a_only, b_only, neither)
    d = pa - pb
    delta = math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    epsilon = math.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    low, high = max(d - delta, -1.0), min(d + epsilon, 1.0)
    if a_only + b_only == 0:
        q = 1.0 - _tail(level) ** (1.0 / n)
        low, high = min(low, -q), max(high, q)
    return Estimate(float(d), float(low), float(high))


def paired_difference(a_only: int, b_only: int, n: int, level: float = LEVEL) -> Estimate:
    """The difference pA - pB of two proportions on the same n items, with an interval that keeps its level for
    every pair of models: (d, low, high).

    d = q (2 pi - 1), q the share of discordant items (certified by one run only) and pi the share of those
    that A alone certifies. Exact Clopper-Pearson intervals at level 1 - (1 - level) / 2 each, for q from the
    m = a_only + b_only discordant items among n and for pi from the a_only among those m (given m, a_only is
    binomial), hold together with probability at least `level` (Bonferroni), and the interval is the range of
    q (2 pi - 1) over them. Its coverage is at least `level` by construction, where two models disagree on
    few images too (Newcombe's method 10 falls to 0.92 there: docs/METHOD.md, "Comparing models"); it
    contains 0 whenever the exact McNemar test of the same images is far from rejecting, and with no
    discordant item it is +-(the exact upper bound on q), never zero width. The price: about 1.3 to 1.5
    times Newcombe's width where many images differ."""
    if n <= 0:
        raise ValueError('no items to compare')
    m = a_only + b_only
    split = 1.0 - (1.0 - check_level(level)) / 2.0
    q_low, q_high = (float(v) for v in clopper_pearson(m, n, split))
    d = (a_only - b_only) / n
    if m == 0:
        return Estimate(0.0, -q_high, q_high)
    pi_low, pi_high = (float(v) for v in clopper_pearson(a_only, m, split))
    low, high = 2.0 * pi_low - 1.0, 2.0 * pi_high - 1.0
    low = q_low * low if low >= 0 else q_high * low
    high = q_high * high if high >= 0 else q_low * high
    return Estimate(float(d), float(min(low, d)), float(max(high, d)))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of a_only successes in a_only + b_only trials at 1/2
    (the images where the two runs disagree; those where they agree say nothing about which is better).
    1 when they never disagree. It is the sign-flip test (`sign_flip_test`) of the per-image differences."""
    if a_only + b_only == 0:
        return 1.0
    return float(binomtest(int(a_only), int(a_only + b_only), 0.5).pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjustment: adjusted p-values that hold the family-wise error rate over all of
    `pvalues` (an adjusted p-value below 0.05 rejects at family-wise level 0.05), whatever their dependence."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind='stable')
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def sign_flip_test(differences, draws: int = SIGN_FLIP_DRAWS, seed: int = SEED) -> Tuple[float, int, bool]:
    """The two-sided sign-flip (permutation) test of "A and B are exchangeable on every image": (p, m, exact).

    Under that null each per-image difference d_i is as likely to be -d_i, so T = |sum d_i| is compared with
    |sum e_i d_i| over the 2^m sign patterns e of the m images whose values differ (the others add 0).
    Exact enumeration for m <= EXACT_SIGN_FLIP; beyond, `draws` random patterns (fixed seed) with the +1 of a
    valid Monte Carlo p-value, (1 + #{|T*| >= T}) / (1 + draws). m = 0: p = 1. With m <= 5 no p-value can be
    below 0.0625 (the smallest is 2 / 2^m). On 0/1 outcomes it is the exact McNemar test."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    x = d[d != 0.0]
    m = int(x.size)
    if m == 0:
        return 1.0, 0, True
    t = abs(float(x.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(x).sum()))  # sums of the same values in another order: rounding only
    if m <= EXACT_SIGN_FLIP:
        sums = np.zeros(1)
        for v in x:
            sums = np.concatenate([sums + v, sums - v])
        return float(np.count_nonzero(np.abs(sums) >= t - tol) / sums.size), m, True
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // m)
    count = done = 0
    while done < draws:
        size = min(block, draws - done)
        signs = rng.integers(0, 2, size=(size, m), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
        count += int(np.count_nonzero(np.abs(signs @ x) >= t - tol))
        done += size
    return (1 + count) / (1 + draws), m, False


def betting_interval(values, low: float, high: float, level: float = LEVEL, cap: float = 0.9) -> Estimate:
    """The mean of per-image `values` known to lie in [low, high], with an interval valid for every distribution
    there and every number of images: (mean, low, high).

    Waudby-Smith and Ramdas (2024, JRSS-B 86: 1-27, "Estimating means of bounded random variables by
    betting"), the hedged capital process with predictable plug-in bets: on values x_i mapped to [0, 1], a
    candidate mean m is rejected when max(K+(m), K-(m)) / 2 >= 1 / (1 - level), K+-(m) = prod(1 +- l_i (x_i -
    m)), l_i = min(sqrt(2 log(2 / (1 - level)) / (n s2_{i-1})), cap / m or cap / (1 - m)), s2 the running
    variance (Ville's inequality makes it valid). It keeps its level where the bootstrap does not: few
    images that differ, none at all (then it is about +-0.04 (high - low) wide at 100 images, as any valid
    interval must be some), a skewed difference. The price: about 1.3 to 2 times the width of a t-interval
    where many images differ. The images are taken in index order, fixed before any value is seen."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = x.size
    if n == 0:
        return Estimate(float('nan'), None, None, 'no images')
    alpha = 1.0 - check_level(level)
    width = high - low
    mean = float(x.mean())
    if not width > 0:
        return Estimate(mean, float(low), float(high))
    u = np.clip((x - low) / width, 0.0, 1.0)
    t = np.arange(1, n + 1)
    running = (0.5 + np.cumsum(u)) / (t + 1)
    variance = (0.25 + np.cumsum((u - running) ** 2)) / (t + 1)
    before = np.concatenate([[0.25], variance[:-1]])
    bet = np.sqrt(2.0 * math.log(2.0 / alpha) / (n * before))
    threshold = math.log(2.0 / alpha)

    def up(m):
        return float(np.sum(np.log1p((np.minimum(bet, cap / m) if m > 0 else bet) * (u - m))))

    def down(m):
        return float(np.sum(np.log1p(-(np.minimum(bet, cap / (1 - m)) if m < 1 else bet) * (u - m))))
    # K+ falls and K- rises with m, so the accepted means are an interval: each end by bisection, kept
    # on the rejected side's far edge (conservative)
    lo_end, hi_end = 0.0, 1.0
    if up(0.0) >= threshold:
        a, b = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (a + b)
            a, b = (mid, b) if up(mid) >= threshold else (a, mid)
        lo_end = a
    if down(1.0) >= threshold:
        a, b = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (a + b)
            a, b = (a, mid) if down(mid) >= threshold else (mid, b)
        hi_end = b
    return Estimate(mean, float(min(low + width * lo_end, mean)), float(max(low + width * hi_end, mean)))


def bootstrap_means(values, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The means of `resamples` bootstrap resamples of `values` (images drawn with replacement).

    The same seed and number of values give the same resamples, so paired statistics of the same images
    are resampled together."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(v.size, 1))  # resamples per block: a few MB of indices at a time
    means = [v[rng.integers(0, v.size, (min(block, resamples - start), v.size))].mean(axis=1)
             for start in range(0, resamples, block)]
    return np.concatenate(means)


def bootstrap_mean(values, level: float = LEVEL, resamples: Optional[int] = None, seed: int = SEED) -> Estimate:
    """The mean of per-image `values` with its BCa bootstrap interval over the images: (mean, low, high).

    Efron (1987), "Better bootstrap confidence intervals": the percentiles Phi(z0 + (z0 + z) /
    (1 - a (z0 + z))) of the bootstrap means, z = Phi^-1 of each tail, with the bias correction z0 =
    Phi^-1(share of bootstrap means below the mean, ties counted half) and the acceleration a =
    sum d^3 / (6 (sum d^2)^1.5), d = values - their mean (the jackknife's, for a mean). For the ACR the
    values are the radii (0 where not certified correct). Deterministic: a fixed seed; `resamples_for(level)`
    resamples at the least, more where skewed values put an end far in a tail (at least TAIL_RESAMPLES beyond
    each end). No interval (low and high None, `why` says why) where none is honest: fewer
    than MIN_BOOTSTRAP images, every value the same (the resamples are all one point), or an end beyond
    what the resamples resolve.
    """
    a_tail = _tail(level)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError('no values')
    mean = float(v.mean())
    if v.min() == v.max():
        return Estimate(mean, None, None, f'every one of the {v.size} images has the value {v[0]:.3g}: the images '
                                          f'show no spread to resample')
    if v.size < MIN_BOOTSTRAP:
        return Estimate(mean, None, None, f'{v.size} images are too few for a bootstrap interval')
    resamples = resamples_for(level) if resamples is None else resamples
    d = v - mean
    accel = float(np.sum(d ** 3) / (6.0 * np.sum(d ** 2) ** 1.5))
    z = norm.ppf([a_tail, 1.0 - a_tail])
    while True:
        means = bootstrap_means(v, resamples, seed)
        below = (np.sum(means < mean) + 0.5 * np.sum(means == mean)) / means.size
        z0 = norm.ppf(np.clip(below, 0.5 / means.size, 1.0 - 0.5 / means.size))
        shares = norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
        # the BCa ends are quantiles of the resamples, at shares that skewed values push far into a tail: as
        # many resamples as leave TAIL_RESAMPLES beyond each end (the same seed: the first ones are the same)
        needed = int(math.ceil(TAIL_RESAMPLES / max(min(shares[0], 1.0 - shares[1]), 1e-300)))
        if needed <= resamples:
            break
        if needed > MAX_RESAMPLES:
            return Estimate(mean, None, None, f'the BCa ends lie so far in the tails ({min(shares[0], 1 - shares[1]):.1e}) '
                                              f'that {MAX_RESAMPLES} resamples do not resolve them')
        resamples = needed
    low, high = np.quantile(means, shares)
    return Estimate(mean, float(min(low, mean)), float(max(high, mean)))


# --- summaries and paired comparisons -----------------------------------------------------------------

def run_summary(radii, grid=GRID, level: float = LEVEL, noise=None) -> dict:
    """One run over its images: {'images', 'accuracy', 'accuracy_low', 'accuracy_high' (arrays over `grid`),
    'acr': Estimate, 'noise': Estimate or None}."""
    radii = np.asarray(radii, dtype=np.float64)
    n = radii.size
    k = (radii[None, :] >= np.asarray(grid, dtype=np.float64)[:, None]).sum(axis=1)
    low, high = clopper_pearson(k, n, level)
    return {'images': n, 'accuracy': k / n, 'accuracy_low': low, 'accuracy_high': high,
            'acr': bootstrap_mean(np.clip(radii, 0.0, None), level),
            'noise': None if noise is None else bootstrap_mean(noise, level)}


def radius_range(a: Run, b: Run) -> Tuple[float, bool]:
    """The largest radius either run could certify, the range of a per-image radius (0 to it): (radius, known).

    Known from each run's sigma, N and alpha (`largest_radius`) when both record them; otherwise the largest
    radius either run reached (`known` False: an estimate from the data, said in the table)."""
    tops = []
    for run in (a, b):
        if run.sigma is None or run.N is None or run.alpha is None:
            top = max(float(np.max(a.radii)), float(np.max(b.radii)), 0.0)
            return (top if top > 0 else 1.0), False
        tops.append(largest_radius(run.sigma, run.N, run.alpha, 'hard'))
    return max(tops + [float(np.max(a.radii)), float(np.max(b.radii))]), True


def compare_pair(a: Run, b: Run, grid=GRID, level: float = LEVEL) -> List[dict]:
    """The paired comparison of two runs on the same images, one row per statistic:

    at each radius of `grid` at which either run certifies an image: 'statistic' 'certified accuracy',
    'radius', 'a' and 'b' (value, low, high: Clopper-Pearson), 'difference' (a - b, low, high:
    `paired_difference`), 'newcombe' (the same with Newcombe's method 10), 'a_only' and 'b_only' (the images only one of them certifies at that radius), 'p' (exact
    McNemar); then 'ACR' and, where both runs have statistics, 'accuracy under noise': 'a' and 'b' with BCa
    intervals, 'difference' with the betting interval of the per-image differences (`betting_interval`),
    'differ' (how many images' values differ) and 'p' (the sign-flip test of those differences)."""
    assert a.radii.size == b.radii.size
    n = a.radii.size
    rows = []
    for r in grid:
        ca, cb = a.radii >= r, b.radii >= r
        if not (ca.any() or cb.any()):
            continue
        both, a_only, b_only = int(np.sum(ca & cb)), int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
        (la, ha), (lb, hb) = (tuple(map(float, clopper_pearson(int(c.sum()), n, level))) for c in (ca, cb))
        rows.append({'statistic': 'certified accuracy', 'radius': float(r),
                     'a': Estimate(float(ca.mean()), la, ha), 'b': Estimate(float(cb.mean()), lb, hb),
                     'difference': paired_difference(a_only, b_only, n, level),
                     'newcombe': newcombe_paired(both, a_only, b_only, n - both - a_only - b_only, level),
                     'a_only': a_only, 'b_only': b_only, 'differ': a_only + b_only, 'p': mcnemar_exact(a_only, b_only)})
    top, _ = radius_range(a, b)
    pairs = [('ACR', np.clip(a.radii, 0.0, None), np.clip(b.radii, 0.0, None), top)]
    if a.noise is not None and b.noise is not None:
        pairs.append(('accuracy under noise', a.noise, b.noise, 1.0))
    for name, va, vb, span in pairs:
        d = va - vb
        p, m, _ = sign_flip_test(d)
        rows.append({'statistic': name, 'radius': None, 'a': bootstrap_mean(va, level), 'b': bootstrap_mean(vb, level),
                     'difference': betting_interval(d, -span, span, level), 'a_only': None, 'b_only': None,
                     'differ': m, 'p': p})
    return rows


# --- coverage, by simulation --------------------------------------------------------------------------

def few_differences(population_a, population_b, share: float = 0.02, seed: int = 0) -> np.ndarray:
    """A second model that differs from A on `share` of the images only, there taking B's values: the hard case
    of two good models that disagree on few images (it keeps A's values wherever B's are the same anyway)."""
    pa, pb = np.asarray(population_a, dtype=np.float64), np.asarray(population_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    differ = np.flatnonzero(pa != pb)
    chosen = rng.choice(differ, size=min(differ.size, max(1, int(round(share * pa.size)))), replace=False)
    out = pa.copy()
    out[chosen] = pb[chosen]
    return out


def coverage(population_a, population_b, images: int, replications: int, radii=(0.0, 0.25, 0.5),
             level: float = LEVEL, seed: int = 0, resamples: int = 1000, draws: int = 2000,
             legacy: bool = False) -> Dict[str, float]:
    """How often each interval holds the value it estimates, and how often each paired interval and test rejects
    where neither model is better, measured by simulation.

    `population_a`, `population_b`: the radii (MACER encoding) of two models on the same population of images,
    whose certified accuracies and ACRs are therefore known. Each replication draws `images` images from it at
    random (with replacement: independent draws from the test distribution), computes the intervals at
    `level` on them, and checks whether they hold the population's values; then draws `images` images again,
    swapping each one's two results with probability 1/2 (the null: the two models are interchangeable on
    every image), and checks whether the paired intervals exclude 0 and the tests reject at 1 - `level`.
    Returns the share per kind: 'accuracy' (Clopper-Pearson, both models at every radius of `radii`), 'acr'
    (BCa, both models), 'difference' (`paired_difference`, at every radius), 'newcombe' (method 10, at every
    radius), 'acr difference' (`betting_interval`); under the null, 'null difference', 'null newcombe',
    'null mcnemar' (at every radius), 'null acr difference', 'null sign-flip'. `legacy` adds the intervals
    of version 1.0 for the record: 'newcombe plain' (method 10 with the plain phi) and 'bca difference' (the
    paired BCa of the ACR difference), and their null rejections. `resamples` and `draws`: the bootstrap's
    resamples and the sign-flip test's draws (valid at any number, by its +1)."""
    pa, pb = np.asarray(population_a, dtype=np.float64), np.asarray(population_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    truth_acc = {(m, r): float(np.mean(p >= r)) for m, p in (('a', pa), ('b', pb)) for r in radii}
    truth_acr = {'a': float(np.clip(pa, 0, None).mean()), 'b': float(np.clip(pb, 0, None).mean())}
    span = max(float(pa.max()), float(pb.max()), 1e-9)
    held: Dict[str, int] = {}
    per: Dict[str, int] = {}

    def count(kind, hit, times=1):
        held[kind] = held.get(kind, 0) + int(hit)
        per[kind] = per.get(kind, 0) + times

    def paired(a, b, r):
        ca, cb = a >= r, b >= r
        both, a_only, b_only = int(np.sum(ca & cb)), int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
        return both, a_only, b_only, images - both - a_only - b_only

    def holds(e, value):
        return e.low is not None and e.low <= value <= e.high

    def excludes_zero(e):
        return e.low is not None and (e.low > 0 or e.high < 0)
    alpha = 1.0 - level
    for rep in range(replications):
        pick = rng.integers(0, pa.size, images)
        a, b = pa[pick], pb[pick]
        for m, v in (('a', a), ('b', b)):
            for r in radii:
                low, high = clopper_pearson(int(np.sum(v >= r)), images, level)
                count('accuracy', low <= truth_acc[(m, r)] <= high)
            count('acr', holds(bootstrap_mean(np.clip(v, 0, None), level, resamples, seed + rep), truth_acr[m]))
        for r in radii:
            both, a_only, b_only, neither = paired(a, b, r)
            truth = truth_acc[('a', r)] - truth_acc[('b', r)]
            count('difference', holds(paired_difference(a_only, b_only, images, level), truth))
            count('newcombe', holds(newcombe_paired(both, a_only, b_only, neither, level), truth))
            if legacy:
                count('newcombe plain', holds(_newcombe_plain(both, a_only, b_only, neither, level), truth))
        d = np.clip(a, 0, None) - np.clip(b, 0, None)
        truth = truth_acr['a'] - truth_acr['b']
        count('acr difference', holds(betting_interval(d, -span, span, level), truth))
        if legacy:
            count('bca difference', holds(bootstrap_mean(d, level, resamples, seed + rep), truth))
        # the null: each image's two results swapped with probability 1/2
        pick = rng.integers(0, pa.size, images)
        swap = rng.random(images) < 0.5
        na, nb = np.where(swap, pb[pick], pa[pick]), np.where(swap, pa[pick], pb[pick])
        for r in radii:
            both, a_only, b_only, neither = paired(na, nb, r)
            count('null difference', excludes_zero(paired_difference(a_only, b_only, images, level)))
            count('null newcombe', excludes_zero(newcombe_paired(both, a_only, b_only, neither, level)))
            count('null mcnemar', mcnemar_exact(a_only, b_only) <= alpha)
            if legacy:
                count('null newcombe plain', excludes_zero(_newcombe_plain(both, a_only, b_only, neither, level)))
        d = np.clip(na, 0, None) - np.clip(nb, 0, None)
        count('null acr difference', excludes_zero(betting_interval(d, -span, span, level)))
        count('null sign-flip', sign_flip_test(d, draws, seed + rep)[0] <= alpha)
        if legacy:
            count('null bca difference', excludes_zero(bootstrap_mean(d, level, resamples, seed + rep)))
    return {k: held[k] / per[k] for k in held}


def _newcombe_plain(both, a_only, b_only, neither, level):
    """Method 10 as version 1.0 computed it (the plain phi, no widening where nothing is discordant): only
    to measure what the interval it replaced did."""
    n = both + a_only + b_only + neither
    ka, kb = both + a_only, both + b_only
    pa, pb = ka / n, kb / n
    (la, ua), (lb, ub) = (tuple(map(float, wilson(k, n, level))) for k in (ka, kb))
    margins = float(ka) * (n - ka) * kb * (n - kb)
    phi = (both * neither - a_only * b_only) / math.sqrt(margins) if margins > 0 else 0.0
    d = pa - pb
    delta = math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    epsilon = math.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    return Estimate(d, max(d - delta, -1.0), min(d + epsilon, 1.0))


def _coverage_study(replications: int = 1000) -> str:
    """The coverage table of docs/METHOD.md ("Comparing models"): the shipped logs as populations, and the hard
    cases built from them (two models that differ on 2 % of the images; neither better)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    published = os.path.join(root, 'reproduce', 'published')
    demo = os.path.join(root, 'reproduce', 'results', 'digits-0.25')
    cohen, salman = (tsv_radii(os.path.join(published, f'{who}-cifar10-0.25.tsv')) for who in ('cohen', 'salman'))
    macer, gaussian = (tsv_radii(os.path.join(demo, f'{m}.hard.tsv')) for m in ('macer', 'gaussian'))
    radii = (0.0, 0.25, 0.5, 0.75)
    populations = [('Cohen vs Salman, Cifar-10, sigma 0.25', cohen, salman),
                   ('Cohen vs Cohen with 2 % of images Salman\'s', cohen, few_differences(cohen, salman)),
                   ('demo: MACER vs Gaussian, digits', macer, gaussian),
                   ('demo: MACER vs MACER with 2 % of images Gaussian\'s', macer, few_differences(macer, gaussian))]
    kinds = ('accuracy', 'acr', 'difference', 'newcombe', 'newcombe plain', 'acr difference', 'bca difference',
             'null difference', 'null newcombe', 'null newcombe plain', 'null mcnemar', 'null acr difference',
             'null sign-flip', 'null bca difference')
    lines = ['| population | images | ' + ' | '.join(kinds) + ' |', '|---|---|' + '---|' * len(kinds)]
    for name, a, b in populations:
        for images in (100, 500):
            c = coverage(a, b, images, replications, radii, legacy=True)
            lines.append(f'| {name} | {images} | ' + ' | '.join(f'{c[k]:.3f}' for k in kinds) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(f'nominal level {LEVEL}, 1000 replications each, radii 0, 0.25, 0.5, 0.75 (rs/compare.py, _coverage_study)')
    print(_coverage_study())
