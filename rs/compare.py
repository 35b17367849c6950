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
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from rs.results import tsv_radii
from rs.runs import Run
from rs.stats import GRID

LEVEL = 0.95  # the default confidence level of every interval over the images
RESAMPLES = 2000  # bootstrap resamples: an end of the interval varies by about 2 % of its width from seed to seed
SEED = 0  # the bootstrap's seed: the same files always give the same intervals


# --- intervals and tests -------------------------------------------------------------------------------

def _tail(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f'the level must lie strictly between 0 and 1, not {level!r}')
    return (1.0 - level) / 2.0


def clopper_pearson(k, n, level: float = LEVEL) -> Tuple[np.ndarray, np.ndarray]:
    """Two-sided exact interval for a binomial proportion from k successes in n trials: (low, high).

    Clopper and Pearson (1934): low is the (1 - level) / 2 quantile of Beta(k, n - k + 1) (0 when
    k = 0), high the 1 - (1 - level) / 2 quantile of Beta(k + 1, n - k) (1 when k = n). Equals
    statsmodels' `proportion_confint(k, n, alpha=1 - level, method="beta")`. Its coverage is at least
    `level` for every proportion. Vectorised over k and n.
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


def newcombe_paired(both: int, a_only: int, b_only: int, neither: int,
                    level: float = LEVEL) -> Tuple[float, float, float]:
    """The difference pA - pB of two proportions measured on the same n items, with its interval: (d, low, high).

    Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions
    based on paired data", method 10 (the hybrid score interval without continuity correction): from
    the Wilson intervals (lA, uA) and (lB, uB) of the two proportions and phi, the correlation of the
    2 x 2 table (0 when a margin is empty),

        low  = d - sqrt((pA - lA)^2 - 2 phi (pA - lA)(uB - pB) + (uB - pB)^2)
        high = d + sqrt((uA - pA)^2 - 2 phi (uA - pA)(pB - lB) + (pB - lB)^2)

    with d = (a_only - b_only) / n. With phi = 0 it is Newcombe's interval for independent
    proportions (statsmodels' `confint_proportions_2indep(..., method="newcomb")`).
    """
    n = both + a_only + b_only + neither
    if n <= 0:
        raise ValueError('no items to compare')
    ka, kb = both + a_only, both + b_only
    pa, pb = ka / n, kb / n
    (la, ua), (lb, ub) = (tuple(map(float, wilson(k, n, level))) for k in (ka, kb))
    margins = float(ka) * (n - ka) * kb * (n - kb)
    phi = (both * neither - a_only * b_only) / np.sqrt(margins) if margins > 0 else 0.0
    d = pa - pb
    delta = np.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    epsilon = np.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    return float(d), float(max(d - delta, -1.0)), float(min(d + epsilon, 1.0))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of a_only successes in a_only + b_only trials at 1/2
    (the images where the two runs disagree; those where they agree say nothing about which is better).
    1 when they never disagree."""
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


def bootstrap_mean(values, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Tuple[float, float, float]:
    """The mean of per-image `values` with its BCa bootstrap interval over the images: (mean, low, high).

    Efron (1987), "Better bootstrap confidence intervals": the percentiles Phi(z0 + (z0 + z) /
    (1 - a (z0 + z))) of the bootstrap means, z = Phi^-1 of each tail, with the bias correction z0 =
    Phi^-1(share of bootstrap means below the mean, ties counted half) and the acceleration a =
    sum d^3 / (6 (sum d^2)^1.5), d = values - their mean (the jackknife's, for a mean). For the ACR the
    values are the radii (0 where not certified correct); for a paired difference, the per-image
    differences. Deterministic: a fixed seed. When every value is the same, the interval is that value.
    """
    a_tail = _tail(level)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError('no values')
    mean = float(v.mean())
    if v.size < 2 or v.min() == v.max():
        return mean, mean, mean
    means = bootstrap_means(v, resamples, seed)
    below = (np.sum(means < mean) + 0.5 * np.sum(means == mean)) / means.size
    z0 = norm.ppf(np.clip(below, 0.5 / means.size, 1.0 - 0.5 / means.size))
    d = v - mean
    accel = float(np.sum(d ** 3) / (6.0 * np.sum(d ** 2) ** 1.5))
    z = norm.ppf([a_tail, 1.0 - a_tail])
    shares = norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(means, shares)
    return mean, float(min(low, mean)), float(max(high, mean))


# --- summaries and paired comparisons -----------------------------------------------------------------

def run_summary(radii, grid=GRID, level: float = LEVEL, noise=None) -> dict:
    """One run over its images: {'images', 'accuracy', 'accuracy_low', 'accuracy_high' (arrays over `grid`),
    'acr': (value, low, high), 'noise': (value, low, high) or None}."""
    radii = np.asarray(radii, dtype=np.float64)
    n = radii.size
    k = (radii[None, :] >= np.asarray(grid, dtype=np.float64)[:, None]).sum(axis=1)
    low, high = clopper_pearson(k, n, level)
    return {'images': n, 'accuracy': k / n, 'accuracy_low': low, 'accuracy_high': high,
            'acr': bootstrap_mean(np.clip(radii, 0.0, None), level),
            'noise': None if noise is None else bootstrap_mean(noise, level)}


def compare_pair(a: Run, b: Run, grid=GRID, level: float = LEVEL) -> List[dict]:
    """The paired comparison of two runs on the same images, one row per statistic:

    at each radius of `grid` at which either run certifies an image: 'statistic' 'certified accuracy',
    'radius', 'a' and 'b' (value, low, high: Clopper-Pearson), 'difference' (a - b, low, high: Newcombe,
    paired), 'a_only' and 'b_only' (the images only one of them certifies at that radius), 'p' (exact
    McNemar); then 'ACR' and, where both runs have statistics, 'accuracy under noise', each with BCa
    intervals and the paired BCa interval of the difference (no p-value)."""
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
                     'a': (float(ca.mean()), la, ha), 'b': (float(cb.mean()), lb, hb),
                     'difference': newcombe_paired(both, a_only, b_only, n - both - a_only - b_only, level),
                     'a_only': a_only, 'b_only': b_only, 'p': mcnemar_exact(a_only, b_only)})
    pairs = [('ACR', np.clip(a.radii, 0.0, None), np.clip(b.radii, 0.0, None))]
    if a.noise is not None and b.noise is not None:
        pairs.append(('accuracy under noise', a.noise, b.noise))
    for name, va, vb in pairs:
        rows.append({'statistic': name, 'radius': None, 'a': bootstrap_mean(va, level), 'b': bootstrap_mean(vb, level),
                     'difference': bootstrap_mean(va - vb, level), 'a_only': None, 'b_only': None, 'p': None})
    return rows


# --- coverage, by simulation --------------------------------------------------------------------------

def coverage(population_a, population_b, images: int, replications: int, radii=(0.0, 0.25, 0.5),
             level: float = LEVEL, seed: int = 0, resamples: int = 1000) -> Dict[str, float]:
    """How often each interval holds the value it estimates, measured by simulation.

    `population_a`, `population_b`: the radii (MACER encoding) of two models on the same population of
    images, whose certified accuracies and ACRs are therefore known. Each replication draws `images`
    images from it at random (with replacement: independent draws from the test distribution), computes
    the intervals at `level` on them, and checks whether they hold the population's values. Returns the
    share that did, per kind of interval ('accuracy': Clopper-Pearson, both models at every radius of
    `radii`; 'acr': BCa, both models; 'difference': Newcombe paired, at every radius; 'acr difference':
    paired BCa), and 'mcnemar size': how often the exact McNemar test rejects at 1 - `level`, at every
    radius, on a population where neither model is better (every image twice, once with its two
    results swapped)."""
    pa, pb = np.asarray(population_a, dtype=np.float64), np.asarray(population_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    null_a, null_b = np.concatenate([pa, pb]), np.concatenate([pb, pa])
    truth_acc = {(m, r): float(np.mean(p >= r)) for m, p in (('a', pa), ('b', pb)) for r in radii}
    truth_acr = {'a': float(np.clip(pa, 0, None).mean()), 'b': float(np.clip(pb, 0, None).mean())}
    held = {'accuracy': 0, 'acr': 0, 'difference': 0, 'acr difference': 0, 'mcnemar size': 0}
    for rep in range(replications):
        pick = rng.integers(0, pa.size, images)
        a, b = pa[pick], pb[pick]
        for m, v in (('a', a), ('b', b)):
            for r in radii:
                ends = clopper_pearson(int(np.sum(v >= r)), images, level)
                held['accuracy'] += bool(ends[0] <= truth_acc[(m, r)] <= ends[1])
            _, low, high = bootstrap_mean(np.clip(v, 0, None), level, resamples, seed + rep)
            held['acr'] += bool(low <= truth_acr[m] <= high)
        for r in radii:
            ca, cb = a >= r, b >= r
            both, a_only, b_only = int(np.sum(ca & cb)), int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
            _, low, high = newcombe_paired(both, a_only, b_only, images - both - a_only - b_only, level)
            held['difference'] += bool(low <= truth_acc[('a', r)] - truth_acc[('b', r)] <= high)
        _, low, high = bootstrap_mean(np.clip(a, 0, None) - np.clip(b, 0, None), level, resamples, seed + rep)
        held['acr difference'] += bool(low <= truth_acr['a'] - truth_acr['b'] <= high)
        pick = rng.integers(0, null_a.size, images)
        na, nb = null_a[pick], null_b[pick]
        held['mcnemar size'] += sum(mcnemar_exact(int(np.sum((na >= r) & (nb < r))), int(np.sum((na < r) & (nb >= r))))
                                    <= 1.0 - level for r in radii)
    per = {'accuracy': 2 * len(radii), 'acr': 2, 'difference': len(radii), 'acr difference': 1,
           'mcnemar size': len(radii)}
    return {k: held[k] / (replications * per[k]) for k in held}


def _coverage_study(replications: int = 1000) -> str:
    """The coverage table of REPRODUCE.md ("Cohen against Salman, image by image"): the shipped logs as populations."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    published = os.path.join(root, 'reproduce', 'published')
    demo = os.path.join(root, 'reproduce', 'results', 'digits-0.25')
    cohen, salman = (os.path.join(published, f'{who}-cifar10-{{}}.tsv') for who in ('cohen', 'salman'))
    populations = [('Cohen vs Salman, Cifar-10, sigma 0.25 (500 images)', cohen.format('0.25'), salman.format('0.25'),
                    (0.0, 0.25, 0.5, 0.75)),
                   ('Cohen vs Salman, Cifar-10, sigma 1.00 (500 images)', cohen.format('1.00'), salman.format('1.00'),
                    (0.0, 0.5, 1.0, 1.5)),
                   ('demo: MACER vs Gaussian, digits (100 images)', os.path.join(demo, 'macer.hard.tsv'),
                    os.path.join(demo, 'gaussian.hard.tsv'), (0.0, 0.25, 0.5, 0.75))]
    lines = ['| population | images drawn | Clopper-Pearson | BCa ACR | Newcombe paired | paired BCa ACR | '
             'McNemar rejections under the null |', '|---|---|---|---|---|---|---|']
    for name, fa, fb, radii in populations:
        for images in (100, 500):
            c = coverage(tsv_radii(fa), tsv_radii(fb), images, replications, radii)
            lines.append(f'| {name} | {images} | {c["accuracy"]:.3f} | {c["acr"]:.3f} | {c["difference"]:.3f} | '
                         f'{c["acr difference"]:.3f} | {c["mcnemar size"]:.3f} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(f'nominal level {LEVEL}, 1000 replications each; intervals at radii listed in rs/compare.py')
    print(_coverage_study())
