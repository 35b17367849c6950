"""What a run's own files may hold: every row and statistics line read back from its logs is checked
against the arguments that made the run (`RowLimits`), for a resume, a recomputation and every reader alike
(`rs.runfiles.read_results`).

A log that was edited, or that other arguments wrote, is refused with one line naming the file (and
the line or the image), never finished into the results or recomputed from. numpy and scipy only, as
`rs.results`.
"""
import math
from typing import Dict, Optional, Sequence

import numpy as np

from plumbing.errors import UsageError
from rs.results import Row
from rs.sequential import Plan, replay
from rs.stats import Evidence, NoEstimate, NonFiniteCertificate, certificates, largest_radius



class RowLimits:
    """What a run's own files can hold, given the arguments that made it (edited or foreign logs are refused).

    Rows (`check`): a radius lies in [0, sigma * Phi^-1(the largest bound N samples can give)] (hard:
    alpha^(1/N), the Clopper-Pearson bound of N successes in N; soft: the Bernstein bound of N scores of
    1), a prediction is a class or -1 (and then the radius is 0), `correct` is 1 exactly when the
    prediction is the label, and the label is a class and the data set's (when `labels` is given).
    Without `num_classes` (a reader that does not know the data set) any class >= 0 is accepted.
    Statistics (`statistics_problem`): see there; `N0` and `early_abstain` (M) are the run's.
    """

    def __init__(self, sigma: float, N: int, alpha: float, num_classes: Optional[int] = None,
                 labels: Optional[Sequence[int]] = None, N0: Optional[int] = None, early_abstain: int = 0,
                 radii: Optional[Sequence[float]] = None):
        self.sigma, self.alpha, self.N, self.num_classes, self.labels = sigma, alpha, N, num_classes, labels
        self.N0, self.M = N0, int(early_abstain or 0)
        self.top = {'hard': largest_radius(sigma, N, alpha, 'hard'), 'soft': largest_radius(sigma, N, alpha, 'soft')}
        # a sequential certification (`rs.sequential`): its radius column holds radii of its grid only
        self.plan = Plan.make(radii, sigma, N, alpha) if radii is not None else None

    @classmethod
    def of(cls, identity: dict, num_classes: Optional[int] = None, labels: Optional[Sequence[int]] = None,
           alpha: Optional[float] = None) -> 'RowLimits':
        """The limits of the run with this identity (its JSON's)."""
        radii = identity.get('radii')
        if radii is not None and not (isinstance(radii, list) and radii and
                                      all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in radii)):
            raise ValueError('the radii of a sequential certification are a list of numbers')
        return cls(float(identity['sigma']), int(identity['N']), float(identity['alpha'] if alpha is None else alpha),
                   num_classes, labels, int(identity['N0']), int(identity.get('early_abstain') or 0), radii)

    def check(self, row: Row, mode: str, path: str, number: int) -> None:
        top = self.top[mode]
        classes = math.inf if self.num_classes is None else self.num_classes
        problem = None
        if row.idx < 0 or (self.labels is not None and row.idx >= len(self.labels)):
            problem = f'image {row.idx} is not in the test set'
        elif not 0 <= row.label < classes:
            problem = f'label {row.label} is not a class' + ('' if self.num_classes is None else
                                                              f' (0..{self.num_classes - 1})')
        elif self.labels is not None and row.label != int(self.labels[row.idx]):
            problem = f'label {row.label} is not the label of test image {row.idx} ({int(self.labels[row.idx])})'
        elif not -1 <= row.predict < classes:
            what = 'a class' if self.num_classes is None else f'a class (0..{self.num_classes - 1})'
            problem = f'prediction {row.predict} is neither {what} nor -1'
        elif row.correct not in (0, 1) or row.correct != int(row.predict == row.label):
            problem = f'correct is {row.correct} for prediction {row.predict} and label {row.label}'
        elif self.plan is not None and row.radius not in self.plan.radii:
            problem = (f'radius {row.radius} is not one of the radii the sequential run decides '
                       f'({", ".join(f"{r:g}" for r in self.plan.radii)})')
        elif not (math.isfinite(row.radius) and 0 <= row.radius <= top * (1 + 1e-12)):
            problem = f'radius {row.radius} is outside [0, {top:.4f}], all that N = {self.N} can certify'
        elif row.predict == -1 and row.radius != 0:
            problem = f'an abstention (prediction -1) has radius {row.radius}, not 0'
        elif not (math.isfinite(row.seconds) and row.seconds >= 0):
            problem = f'time {row.seconds} is not a duration'
        if problem:
            raise UsageError(f'{path}, line {number}: {problem}; the log was edited or comes from other arguments: '
                             f'move it away (or delete the line) and rerun')

    def statistics_problem(self, idx: int, label: int, evidence: Dict[str, Evidence], drawn: int,
                           rows: Dict[str, Row]) -> Optional[str]:
        """What is wrong with image `idx`'s statistics line, given its rows (None when nothing is).

        The line must be one this run could have written: per mode the selected class is a class, and
        in hard mode the argmax (np.argmax's rule: the first of equal counts) of the N0 selection counts
        `counts0`, one per class, summing to N0; n is N (M for an early abstention); 0 <= nA <= n; the
        soft sums lie in what n scores in [0, 1] can give (0 <= sum <= n, sum^2 / n <= sum_sq <= sum);
        the early test's statistics are there exactly when the run made one (M > 0), with M draws, and
        its decision at the run's alpha is the one logged; `drawn` is N0 + M + N, less N when the test
        abstained; the label is the rows'; and the rows are the certificates the statistics give.
        """
        classes = self.num_classes
        if any(r.label != label for r in rows.values()):
            m, r = next((m, r) for m, r in rows.items() if r.label != label)
            return f'the label {label} of its statistics is not the label {r.label} of its row in the {m} log'
        early = {e.early for e in evidence.values()}
        if len(early) > 1:
            return 'its statistics are an early abstention in one mode and not in another'
        abstained = early.pop()
        if (abstained or any(e.early_test is not None for e in evidence.values())) and self.M <= 0:
            return 'its statistics hold an early test, but the run made none (early_abstain 0)'
        for m, e in evidence.items():
            if e.mode != m:
                return f'its statistics hold {e.mode} statistics under "{m}"'
            if m == 'hard':
                counts0 = e.counts0 or ()
                if classes is None:
                    classes = len(counts0)
                if len(counts0) != classes or any(c < 0 for c in counts0):
                    return f'its selection counts counts0 are {len(counts0)} counts >= 0, not one per class ({classes})'
                if self.N0 is not None and sum(counts0) != self.N0:
                    return f'its selection counts counts0 sum to {sum(counts0)}, not N0 = {self.N0}'
                if e.cAHat != int(np.argmax(counts0)):
                    return (f'its selected class cAHat {e.cAHat} is not the most frequent of its selection counts '
                            f'({int(np.argmax(counts0))})')
            if not (0 <= e.cAHat and (classes is None or e.cAHat < classes)):
                return f'its selected class cAHat {e.cAHat} ({m}) is not a class'
            if self.plan is None and e.looks is not None:
                return 'its statistics hold the looks of a sequential test, but the run made none'
            if self.plan is not None:
                problem = self._looks_problem(e)
                if problem:
                    return problem
            n_wanted = self.M if e.early else self.N if self.plan is None else e.n
            problem = _sample_problem(e, n_wanted, 'M' if e.early else 'N')
            if problem:
                return problem
            if e.early_test is not None:
                t = e.early_test
                if t.mode != m or t.cAHat != e.cAHat:
                    return 'its early test is of another class'
                problem = _sample_problem(t, self.M, 'M')
                if problem:
                    return 'in its early test, ' + problem
        if self.N0 is not None and self.plan is not None:
            n = next(iter(evidence.values())).n
            if drawn != self.N0 + n:
                return f'{drawn} samples are said to be drawn, not {self.N0 + n} (N0 + the draws of its last look)'
        elif self.N0 is not None:
            wanted = self.N0 + self.M + (0 if abstained else self.N)
            if drawn != wanted:
                less = ', less N' if abstained else ''
                return f'{drawn} samples are said to be drawn, not {wanted} (N0 + M + N{less})'
        modes = tuple(rows)
        try:
            given = certificates([evidence[m] for m in modes], self.sigma, self.alpha,
                                 radii=None if self.plan is None else self.plan.radii, N=self.N)
        except NoEstimate:
            if self.plan is not None:
                return f'its sequential test at the run\'s alpha {self.alpha:g} would not have stopped at its last look'
            return f'its early abstention is not what the early test gives at the run\'s alpha {self.alpha:g}'
        except NonFiniteCertificate as e:
            return f'its statistics give no finite certificate ({e})'
        for m, (prediction, radius_) in zip(modes, given):
            if (prediction, radius_) != (rows[m].predict, rows[m].radius):
                return (f'its row in the {m} log (predict {rows[m].predict}, radius {rows[m].radius}) is not what its '
                        f'statistics give (predict {prediction}, radius {radius_})')
        return None


    def _looks_problem(self, e: Evidence) -> Optional[str]:
        """What is wrong with the looks of a sequential run's statistics (None when nothing is): there must be
        some, no more than the plan has, each a count the draws up to it allow, never decreasing, the last one
        nA at n, the look's draws; and the test must stop at the last look, not before."""
        assert self.plan is not None
        looks, sizes = e.looks, self.plan.looks
        if e.mode != 'hard' or looks is None or e.early or e.early_test is not None:
            return 'its statistics are not those of a sequential test (hard mode, the counts at each look)'
        if not 0 < len(looks) <= len(sizes):
            return f'it holds {len(looks)} looks, not between 1 and the {len(sizes)} of the run\'s schedule'
        previous_n, previous = 0, 0
        for n, a in zip(sizes, looks):
            if not previous <= a <= previous + n - previous_n:
                return f'its count {a} at the look of {n} draws is not one the draws since the look before allow'
            previous_n, previous = n, a
        if e.n != sizes[len(looks) - 1] or e.nA != looks[-1]:
            return f'its n {e.n} and nA {e.nA} are not those of its last look ({sizes[len(looks) - 1]}, {looks[-1]})'
        if replay(self.plan, looks) != len(looks):
            return 'its sequential test stops at another look than its last one'
        return None


def _sample_problem(e: Evidence, n_wanted: int, name: str) -> Optional[str]:
    """What is wrong with the statistics of one set of draws (n, nA or the sums), None when nothing is."""
    if e.n != n_wanted:
        return f'n is {e.n} ({e.mode}), not {name} = {n_wanted}'
    if e.mode == 'hard':
        if e.nA is None or not 0 <= e.nA <= e.n:
            return f'nA is {e.nA}, outside [0, n = {e.n}]'
        return None
    s, q = e.sum, e.sum_sq
    if s is None or q is None or not (math.isfinite(s) and math.isfinite(q)):
        return f'the soft sums {s}, {q} are not finite numbers'
    slack = 1e-9 * max(e.n, 1)  # the sums add float32 scores in float64: rounding, never more
    if not -slack <= s <= e.n + slack:
        return f'the soft sum {s} is outside [0, n = {e.n}]'
    if not (s * s / max(e.n, 1)) * (1 - 1e-6) - slack <= q <= s + slack:
        return f'the sum of squares {q} is not one that scores in [0, 1] summing to {s} can give'
    return None
