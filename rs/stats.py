"""The statistics of randomized smoothing as pure functions: no sampling, no torch.

Sampling lives in `rs.core`; these functions turn counts and sums into bounds, radii, certified
accuracy and ACR (docs/METHOD.md: "Certifying an image", "Protocol and metrics").
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

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


def check_alpha(alpha: float) -> float:
    """alpha as a certificate needs it, else a ValueError saying why (the caller names its flag).

    A certificate holds with probability at least 1 - alpha, so alpha must lie strictly between 0
    and 1/2: at 1/2 or more a "certificate" is wrong as often as right, and its radius exceeds what
    the samples support (Clopper-Pearson's lower bound passes the observed frequency). Below about
    1e-308, 2 / alpha (in Bernstein's ln(2 / alpha)) overflows and the bounds are NaN.
    """
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f'alpha must be a number strictly between 0 and 1/2, not {alpha!r}') from None
    if not 0 < alpha < 0.5:
        raise ValueError(f'alpha must lie strictly between 0 and 1/2 (a certificate holds with probability 1 - alpha), '
                         f'not {alpha!r}')
    if not math.isfinite(2.0 / alpha):
        raise ValueError(f'alpha {alpha!r} is so small that the confidence bounds overflow (2 / alpha is not a finite '
                         f'number); choose alpha >= 1e-300')
    return alpha


# the noise level of the literature's main setting (pixel units of [0, 1] images): training's default, and
# certification's for a checkpoint that records none
DEFAULT_SIGMA = 0.25

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
    the n draws.

    With early abstention (M draws after selection, `Smooth.evidence`): `early` is True when the early
    test abstained, and these are then the statistics of its M draws (`n` = M), which never give a
    certificate; otherwise `early_test` holds the M draws' statistics (an Evidence with `n` = M)
    beside the n draws', so that the test can be replayed at another alpha (`certificates`). A run
    of version 1.0.0 kept them only for the images the test abstained on: `early_test` is None.

    A sequential certification (`rs.sequential`, hard mode): `looks` holds the successes nA counted at each
    look made (cumulative), `n` and `nA` those of the last; the certificate is the test's decision, which
    needs the run's grid and N (`certificates(..., radii=, N=)`).
    """
    mode: str
    cAHat: int
    n: int
    nA: Optional[int] = None
    sum: Optional[float] = None
    sum_sq: Optional[float] = None
    counts0: Optional[Tuple[int, ...]] = None
    early: bool = False
    early_test: Optional['Evidence'] = None
    looks: Optional[Tuple[int, ...]] = None

    def test_statistics(self) -> Optional['Evidence']:
        """The early test's statistics (its M draws), None when there was no test or they were not kept."""
        return self if self.early else self.early_test

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


class NoEstimate(ValueError):
    """The early test abstained on the image at the run's alpha, so its n estimation draws were never
    made, but at the alpha asked for it would not abstain: a fresh run would estimate, and nothing
    kept can say what that estimate is."""


class NonFiniteCertificate(ArithmeticError):
    """A bound or radius came out NaN or infinite: no such certificate may be issued or written."""


def early_test_abstains(tests: Sequence[Evidence], alpha: float) -> bool:
    """Early abstention's test (docs/METHOD.md, "Early abstention"): True when the one-sided (1 - alpha)
    upper confidence bound on the selected class's probability from the M test draws is below 1/2 in
    every mode (`tests`: each mode's statistics of those M draws)."""
    return all(t.upper_bound(alpha) < 0.5 for t in tests)


def certificate(evidence: Evidence, sigma: float, alpha: float, bound: Optional[str] = None) -> Tuple[int, float]:
    """(prediction, radius) from one mode's statistics: Cohen et al. 2019, CERTIFY, step 4 (and its soft form).

    If pABar < 1/2, abstain (-1, radius 0); else cAHat with radius sigma * Phi^-1(pABar). An image with
    an early test is decided as `certificates` decides it (the test replayed at alpha, this mode alone:
    for a run of several modes use `certificates`, since the test abstains only when every mode's does).
    """
    if bound is not None and bound not in BOUNDS[evidence.mode]:
        raise ValueError(f'{evidence.mode} statistics allow the bounds {", ".join(BOUNDS[evidence.mode])}, not {bound}')
    return certificates((evidence,), sigma, alpha, bound)[0]


def certificates(evidence: Sequence[Evidence], sigma: float, alpha: float, bound: Optional[str] = None,
                 radii: Optional[Sequence[float]] = None, N: Optional[int] = None) -> Tuple[Tuple[int, float], ...]:
    """Each mode's (prediction, radius) of one image at `alpha`, from its statistics (one Evidence per mode).

    With an early test, it is replayed at `alpha` on the kept M-draw statistics: where it abstains,
    every mode abstains; where it does not, each certificate comes from the n estimation draws, as in
    a fresh run with that alpha and the same seed (docs/METHOD.md, "Sufficient statistics"). `bound`
    applies to the modes whose statistics allow it (the others keep their own). Raises
    `NoEstimate` when the test abstained when the image was certified but would not at `alpha` (there
    are no estimation draws), `NonFiniteCertificate` when a bound or radius is not a finite number.
    Statistics without a kept test (no early test, or one of version 1.0.0 that did not abstain) are
    taken as not abstaining.

    Statistics of a sequential certification (`looks`) give the test's decision at `alpha` for the grid
    `radii` and the N of the run (`rs.sequential.certificate_of`); `NoEstimate` when at `alpha` the test
    would have gone on past the looks that were made.
    """
    if any(e.looks is not None for e in evidence):
        return tuple(_sequential_certificate(e, sigma, alpha, bound, radii, N) for e in evidence)
    tests = [t for e in evidence if (t := e.test_statistics()) is not None]
    if evidence and len(tests) == len(evidence):
        if early_test_abstains(tests, alpha):
            return tuple((ABSTAIN, 0.0) for _ in evidence)
        if any(e.early for e in evidence):
            raise NoEstimate(f'the early test abstained on it, but at alpha {alpha:g} it would not, and the '
                             f'{evidence[0].n} test draws are no estimate')
    out = []
    for e in evidence:
        pABar = e.lower_bound(alpha, bound if bound in BOUNDS[e.mode] else None)
        if pABar < 0.5:
            out.append((ABSTAIN, 0.0))
            continue
        r = radius(sigma, pABar)
        if not math.isfinite(r):  # pABar NaN, or so close to 1 that Phi^-1 overflows
            raise NonFiniteCertificate(f'the {e.mode} radius sigma * Phi^-1({pABar!r}) at alpha {alpha:g} is not a '
                                       f'finite number')
        out.append((e.cAHat, r))
    return tuple(out)


def _sequential_certificate(e: Evidence, sigma, alpha, bound, radii, N) -> Tuple[int, float]:
    from rs.sequential import Plan, certificate_of, replay  # rs.sequential builds on this module
    if e.looks is None or e.mode != 'hard' or radii is None or N is None:
        raise ValueError('the statistics of a sequential certification give a certificate only with the run\'s '
                         'radii and N, in hard mode')
    if bound not in (None, 'clopper-pearson'):
        raise ValueError(f'a sequential certification is decided by Clopper-Pearson tests, not the {bound} bound')
    plan = Plan.make(radii, sigma, N, alpha)
    made = replay(plan, e.looks)
    if made is None:
        raise NoEstimate(f'at alpha {alpha:g} its test would go on past the {e.n} draws that were made')
    return certificate_of(plan, e.cAHat, e.looks[:made])


def largest_radius(sigma: float, N: int, alpha: float, mode: str = 'hard') -> float:
    """The largest radius N samples can certify at level alpha: sigma * Phi^-1 of the bound when all N agree.

    hard: alpha^(1/N) (Clopper-Pearson with nA = N; 0.80 at sigma 0.25 and N = 10000); soft: the
    Bernstein bound of N scores of 1. 0 when even that bound is below 1/2 (every image abstains).
    """
    e = Evidence('hard', 0, N, nA=N) if mode == 'hard' else Evidence('soft', 0, N, sum=float(N), sum_sq=float(N))
    bound = e.lower_bound(alpha)
    return radius(sigma, bound) if bound >= 0.5 else 0.0
