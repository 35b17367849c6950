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
- the per-image statistics a run keeps (NAME.stats.jsonl): the accuracy under noise, and the lower
  confidence bound on the probability of the label;
- reading the runs to compare (TSV logs, this project's JSON and statistics) and checking that they
  certified the same images.

numpy and scipy only. `python -m rs.compare` measures the coverage of the intervals by simulation.
"""
import json
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from plumbing.errors import UsageError
from rs.results import parse_evidence, read_text, read_tsv, tsv_radii
from rs.stats import GRID, certified_radii, lower_confidence_bound, modes_of

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


# --- what the per-image statistics say beyond the certificate ------------------------------------------

def noise_accuracy(label, cAHat, nA, n, label_count0, N0) -> np.ndarray:
    """Per image: the share of noisy copies the base classifier gives the label (its accuracy under noise).

    From the estimation draws (nA / n) where the selected class cAHat is the label: they counted the
    label. Elsewhere they counted another class, and the label's share among the N0 selection draws
    (`label_count0 / N0`) stands in; it is slightly low on images where the label and another class are
    close (selection then picked the other class when the label's draws happened to be few). Arrays
    over images."""
    label, cAHat = np.asarray(label), np.asarray(cAHat)
    nA, n = np.asarray(nA, dtype=np.float64), np.asarray(n, dtype=np.float64)
    counted = np.asarray(label_count0, dtype=np.float64) / np.asarray(N0, dtype=np.float64)
    return np.where(cAHat == label, nA / n, counted)


def label_lower_bound(label, cAHat, nA, n, alpha: float) -> np.ndarray:
    """Per image: the one-sided (1 - alpha) Clopper-Pearson lower bound on the probability that the base
    classifier gives the label under noise: pABar where the selected class is the label (Cohen et al.,
    CERTIFY step 3), 0 elsewhere (the estimation draws counted another class). An image is certified
    correct exactly when this is at least 1/2; its distribution shows what the ACR averages away."""
    return np.array([lower_confidence_bound(int(k), int(m), alpha) if c == y else 0.0
                     for y, c, k, m in zip(label, cAHat, nA, n)], dtype=np.float64)


# --- the runs to compare ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One run's results per image, in image order: what a comparison needs.

    `radii` in the MACER encoding (the radius where certified correct, -1 elsewhere), `idx` the images'
    indices (sorted), `labels` (None when the log has no label column);
    from this project's JSON, where there is one: `sigma`, `N`, `alpha`, `dataset` (None otherwise);
    from its hard statistics (NAME.stats.jsonl): `noise` (`noise_accuracy`) and `bound`
    (`label_lower_bound`) per image, None without them; `notes`: what could not be used, and why."""
    path: str
    mode: str
    radii: np.ndarray
    idx: np.ndarray
    labels: Optional[np.ndarray] = None
    sigma: Optional[float] = None
    N: Optional[int] = None
    alpha: Optional[float] = None
    dataset: Optional[str] = None
    noise: Optional[np.ndarray] = None
    bound: Optional[np.ndarray] = None
    notes: Tuple[str, ...] = ()

    def restricted(self, keep: np.ndarray) -> 'Run':
        """The same run on the images `keep` (indices it holds, in order)."""
        where = np.searchsorted(self.idx, keep)
        pick = (lambda a: None if a is None else a[where])
        return replace(self, idx=self.idx[where], labels=pick(self.labels), radii=self.radii[where],
                       noise=pick(self.noise), bound=pick(self.bound))


def _load_json(path: str) -> dict:
    try:
        record = json.loads(read_text(path, 'give the NAME.json of a certification run of this tool'))
    except ValueError:
        record = None
    if not (isinstance(record, dict) and (isinstance(record.get('identity'), dict)
                                          or isinstance(record.get('recomputed'), dict))):
        raise UsageError(f'{path} is not a result summary of this tool (no "identity"); give its TSV log instead')
    return record


def record_beside(path: str, mode: str) -> Optional[Tuple[str, str]]:
    """(the JSON of this tool that describes result file `path`, the mode `path` holds), or None.

    NAME.json for NAME.json, NAME.mat (mode `mode`) and NAME.MODE.tsv; PREFIX.json for a recomputation's
    PREFIX.tsv. None where there is none (Cohen's and Salman's logs)."""
    folder, base = os.path.split(path)
    if base.endswith('.json'):
        return path, mode
    for suffix, its_mode in (('.mat', mode), ('.hard.tsv', 'hard'), ('.soft.tsv', 'soft'), ('.tsv', None)):
        if base.endswith(suffix):
            candidate = os.path.join(folder, base[:-len(suffix)] + '.json')
            if not os.path.isfile(candidate):
                return None
            if its_mode is None:  # PREFIX.tsv: a recomputation's, when PREFIX.json says so
                try:
                    with open(candidate, encoding='utf-8') as f:
                        recomputed = json.load(f).get('recomputed')
                except (OSError, ValueError, AttributeError):
                    return None
                return (candidate, recomputed['mode']) if isinstance(recomputed, dict) and 'mode' in recomputed \
                    else None
            return candidate, its_mode
    return None


def _check_indices(path: str, idx: np.ndarray) -> None:
    """Refuse a log that holds an image twice: which row counts would be a guess."""
    order = np.argsort(idx, kind='stable')
    repeated = np.flatnonzero(np.diff(idx[order]) == 0)
    if repeated.size:
        first, second = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
        raise UsageError(f'{path} logs image {idx[first]} twice (lines {first + 2} and {second + 2}): a log holds each '
                         f'image once; remove the repeated row')


def _statistics(path: str, idx: np.ndarray, labels: np.ndarray, predict: Optional[np.ndarray],
                alpha: float) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Tuple[str, ...]]:
    """(noise accuracy, label bound, notes) per image of `idx` from the hard statistics log `path`."""
    if not os.path.isfile(path):
        return None, None, (f'{path} does not exist: no accuracy under noise or bound on pA for this run',)
    found = {i: (label, e['hard']) for i, label, e, _ in
             parse_evidence(read_text(path, 'move it away'), path, ('hard',))}
    missing = [int(i) for i in idx if int(i) not in found]
    if missing:
        return None, None, (f'{path} has no statistics for {len(missing)} of the {idx.size} images (e.g. image '
                            f'{missing[0]}): no accuracy under noise or bound on pA for this run',)
    for k, i in enumerate(idx):
        label, e = found[int(i)]
        if label != labels[k] or (predict is not None and predict[k] != -1 and predict[k] != e.cAHat):
            raise UsageError(f'{path}: image {i} has label {label} and selected class {e.cAHat} there, but label '
                             f'{labels[k]} and prediction {predict[k] if predict is not None else "?"} in its log: '
                             f'the statistics belong to another run')
    rows = [found[int(i)][1] for i in idx]
    counts0 = [e.counts0 or () for e in rows]
    label_count0 = [c[y] if 0 <= y < len(c) else 0 for c, y in zip(counts0, labels)]
    N0 = [max(sum(c), 1) for c in counts0]
    cAHat = [e.cAHat for e in rows]
    nA, n = [e.nA for e in rows], [e.n for e in rows]
    return (noise_accuracy(labels, cAHat, nA, n, label_count0, N0), label_lower_bound(labels, cAHat, nA, n, alpha),
            ())


def read_run(path: str, mode: str = 'hard') -> Run:
    """A result file as a `Run`: a TSV log (Cohen's, Salman's, this project's), this project's NAME.json (its
    log and statistics beside it), a recomputation's PREFIX.json or PREFIX.tsv, or a `.mat` (with its JSON
    beside it for the image indices). `mode`: which certificates of a JSON or `.mat` of both modes."""
    if not os.path.exists(path):
        raise UsageError(f'{path} does not exist')
    if os.path.isdir(path):
        raise UsageError(f'{path} is a folder; give a result file (NAME.json, a TSV log)')
    described = record_beside(path, mode)
    if described is None:
        if path.endswith('.mat'):
            raise UsageError(f'{path} holds no image indices, so its images cannot be matched with another run\'s; '
                             f'give its NAME.json or TSV log')
        return _from_log(path, mode)
    record_path, mode = described
    record = _load_json(record_path)
    folder = os.path.dirname(record_path)
    stem = os.path.basename(record_path)[:-len('.json')]
    if 'recomputed' in record and 'identity' not in record:
        r = record['recomputed']
        if r.get('mode') != mode:
            raise UsageError(f'{record_path} is a recomputation of {r.get("mode")} certificates, not {mode}; '
                             f'choose --mode {r.get("mode")}')
        log = os.path.join(folder, stem + '.tsv')
        return _from_log(log, mode, sigma=r.get('sigma'), N=r.get('N'), alpha=r.get('alpha'),
                         statistics=r.get('statistics'), dataset=None)
    identity = record['identity']
    if record.get('status') != 'complete':
        raise UsageError(f'{record_path} is a run that has not finished; finish it (rerun its command) first')
    try:
        modes = modes_of(identity.get('mode', 'hard'))
    except ValueError:
        raise UsageError(f'{record_path} is not a result summary of this tool (its mode is '
                         f'{identity.get("mode")!r})') from None
    if mode not in modes:
        raise UsageError(f'{record_path} holds {" and ".join(modes)} certificates, not {mode}; choose --mode '
                         f'{modes[0]}')
    files = record['files'] if isinstance(record.get('files'), dict) else {}
    logs = files['logs'] if isinstance(files.get('logs'), dict) else {}
    log = os.path.join(folder, os.path.basename(logs.get(mode) or f'{stem}.{mode}.tsv'))
    stats = os.path.join(folder, os.path.basename(files.get('stats') or f'{stem}.stats.jsonl'))
    return _from_log(log, mode, sigma=identity.get('sigma'), N=identity.get('N'), alpha=identity.get('alpha'),
                     statistics=stats if 'hard' in modes else None, dataset=identity.get('dataset'))


def _from_log(log: str, mode: str, sigma=None, N=None, alpha=None, statistics=None, dataset=None) -> Run:
    if not os.path.isfile(log):
        raise UsageError(f'{log} does not exist, but its run wrote it; restore it')
    columns = read_tsv(log)
    if 'idx' not in columns:
        raise UsageError(f'{log} has no idx column: its images cannot be matched with another run\'s')
    idx = columns['idx']
    if idx.size == 0:
        raise UsageError(f'{log} holds no results')
    _check_indices(log, idx)
    order = np.argsort(idx, kind='stable')
    labels = columns['label'][order] if 'label' in columns else None
    radii = certified_radii(columns['radius'], columns['correct'])[order]
    run = Run(log, mode, radii, idx[order], labels, None if sigma is None else float(sigma),
              None if N is None else int(N), None if alpha is None else float(alpha),
              None if dataset is None else str(dataset))
    if statistics is not None and mode == 'hard' and labels is not None and run.alpha is not None:
        predict = columns['predict'][order] if 'predict' in columns else None
        noise, bound, notes = _statistics(statistics, run.idx, labels, predict, run.alpha)
        run = replace(run, noise=noise, bound=bound, notes=notes)
    return run


def same_images(runs: Sequence[Run], names: Sequence[str], shared: bool,
                labels: Optional[Sequence[str]] = None) -> Tuple[List[Run], Optional[str]]:
    """The runs on the images they all certified, in the same order, and a note when `shared` dropped some.

    Without `shared`, runs on other images are refused with one line naming the first difference; an image
    with other labels in two runs is refused whatever `shared` says (the runs are on other data). Errors
    name the runs by `names` (their files), the note by `labels` (default: `names`)."""
    first = runs[0]
    for run, name in zip(runs[1:], names[1:]):
        if run.dataset is not None and first.dataset is not None and run.dataset != first.dataset:
            raise UsageError(f'{names[0]} certified images of {first.dataset}, {name} of {run.dataset}: a paired '
                             f'comparison needs the same images')
    common = first.idx
    for run in runs[1:]:
        common = np.intersect1d(common, run.idx)
    for run, name in zip(runs[1:], names[1:]):
        if not shared and not np.array_equal(run.idx, first.idx):
            only_first = np.setdiff1d(first.idx, run.idx)
            only_run = np.setdiff1d(run.idx, first.idx)
            i = min(only_first[:1].tolist() + only_run[:1].tolist())
            where, missing = (names[0], name) if i in only_first else (name, names[0])
            raise UsageError(f'{names[0]} and {name} certified other images: image {i} is in {where}, not in '
                             f'{missing} ({first.idx.size} and {run.idx.size} images, {common.size} in common '
                             f'to all runs); compare runs on the same images, or pass --shared to compare on the '
                             f'images all runs certified')
    if common.size == 0:
        raise UsageError(f'no image is certified by every run ({", ".join(names)}): nothing to compare')
    out = [r.restricted(common) for r in runs]
    for run, name in zip(out[1:], names[1:]):
        if run.labels is not None and out[0].labels is not None and not np.array_equal(run.labels, out[0].labels):
            k = int(np.flatnonzero(run.labels != out[0].labels)[0])
            raise UsageError(f'image {common[k]} has label {out[0].labels[k]} in {names[0]} and {run.labels[k]} in '
                             f'{name}: the runs are on other data, not the same images')
    note = None
    if any(r.idx.size != common.size for r in runs):
        note = (f'compared on the {common.size} images every run certified (--shared): ' +
                ', '.join(f'{name} {r.idx.size}' for r, name in zip(runs, labels or names)))
    return out, note


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
