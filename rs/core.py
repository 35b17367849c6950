"""The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I) (Cohen et al. 2019),
with MACER's soft version Z_c = E_d softmax(beta * f(x + d))_c (MACER appendix A).

The interface is the public MACER code's (`Smooth(base_classifier, num_classes, sigma, device,
mode, beta)`, `certify`, `predict`, `ABSTAIN`); the statistics are the pure functions of
`rs.stats`. Noise is drawn on the model's device, in batches, and the outputs are tallied there;
the tallies reach the host once per call.
"""
import dataclasses
import math
import os
from collections import namedtuple
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from plumbing.errors import BadArgument
from rs.stats import ABSTAIN, Evidence, bernstein_lower_bound, binomial_pvalue, certificates, check_alpha, \
    early_test_abstains, modes_of


# counts: int64 [C], how often each class was f's argmax; scores: float64 [C], the sum over samples
# of softmax(beta * logits); squares: float64 [C], the sum of its squares (None in hard mode)
Tally = namedtuple('Tally', 'counts scores squares')
DeviceLike = Union[str, torch.device]


class NonFiniteOutput(ArithmeticError):
    """The base classifier's output was NaN or infinite (`scores` False), or its logits were finite but
    the soft scores softmax(beta * logits) were not (`scores` True: beta times the logits overflows):
    there is nothing to certify."""

    def __init__(self, message: str, scores: bool = False):
        super().__init__(message)
        self.scores = scores


class BatchTooLarge(MemoryError):
    """A batch of noisy copies does not fit in the device's memory."""


def device_memory(device: torch.device) -> Optional[int]:
    """Bytes of memory of `device` (the GPU's own, or the machine's RAM), None when the system does not say."""
    try:
        if device.type == 'cuda':
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf('SC_PAGE_SIZE')) * int(os.sysconf('SC_PHYS_PAGES'))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _size(n_bytes: float) -> str:
    for unit in ('bytes', 'KB', 'MB', 'GB', 'TB'):
        if n_bytes < 1024 or unit == 'TB':
            return f'{n_bytes:.0f} {unit}' if unit == 'bytes' else f'{n_bytes:.1f} {unit}'
        n_bytes /= 1024
    raise AssertionError


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocation failure (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(e)


def image_generator(seed: int, index: int, device: DeviceLike, stream: int = 0) -> torch.Generator:
    """The noise stream of test image `index`: a generator of its own, seeded from (seed, index).

    One image's certificate therefore does not depend on which images were certified before it,
    and a single image can be re-certified alone with the same result (same device and batch size).
    `stream` 1 is a second, independent stream of the same image (the early-abstention test's).
    """
    entropy = [int(seed), int(index)] + ([int(stream)] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return generator


def _count(name: str, value, least: int = 1) -> int:
    """An API argument that counts something: an int (or an integral numpy integer) >= `least`, else BadArgument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise BadArgument(f'Smooth: {name} must be an integer >= {least}, not {value!r}')
    return int(value)


def _positive(name: str, value) -> float:
    """A positive finite number (sigma, beta), else BadArgument."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise BadArgument(f'Smooth: {name} must be a positive number, not {value!r}')
    try:
        value = float(value)
    except OverflowError:
        raise BadArgument(f'Smooth: {name} must be a positive finite number, not an integer that large') from None
    if not (math.isfinite(value) and value > 0):
        raise BadArgument(f'Smooth: {name} must be a positive finite number, not {value!r}')
    return value


def _alpha(alpha) -> float:
    try:
        return check_alpha(alpha)
    except ValueError as e:
        raise BadArgument(f'Smooth: {e}') from None


class Smooth:
    """A smoothed classifier around `base_classifier`, which maps [B, C, H, W] in [0, 1] to logits [B, num_classes].

    mode: 'hard' (Cohen's: counts of argmax classes, Clopper-Pearson bound), 'soft' (MACER's:
    mean of softmax(beta * logits), empirical Bernstein bound) or 'both' (both on the same samples).
    """

    # to abstain, Smooth returns this int
    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float,
                 device: DeviceLike, mode: str = 'hard', beta: float = 1.0):
        if not callable(base_classifier):
            raise BadArgument(f'Smooth: base_classifier must be a network (an nn.Module), not {type(base_classifier).__name__}')
        try:
            self.modes = modes_of(mode)
        except ValueError as e:
            raise BadArgument(f'Smooth: {e}') from None
        num_classes = _count('num_classes', num_classes, least=2)
        sigma = _positive('sigma', sigma)
        beta = _positive('beta', beta)
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise BadArgument(f'Smooth: device {device!r} is not a device ({str(e).splitlines()[0][:120]})') from None
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma
        self.device = torch.device(device)
        self.mode = mode
        self.beta = beta
        self.memory = device_memory(self.device)  # bytes, to refuse a batch that cannot fit before allocating it

    @property
    def _hard(self):
        return self.mode in ('hard', 'both')

    @property
    def _soft(self):
        return self.mode in ('soft', 'both')

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: Optional[torch.Generator] = None) -> tuple:
        """Cohen et al. 2019, CERTIFY (hard), and its soft version (docs/METHOD.md, "Certifying an image").

        x: one image [C, H, W] in [0, 1]. n0 noisy copies choose cAHat (hard: the most frequent
        class; soft: the largest summed score); n fresh copies give pABar, a lower bound on pA
        (hard: one-sided Clopper-Pearson; soft: empirical Bernstein). If pABar < 1/2 it abstains,
        else it returns cAHat and the radius sigma * Phi^-1(pABar). With probability at least
        1 - alpha over the noise, a returned class is the smoothed classifier's prediction at
        every point within the returned L2 radius of x.

        Returns (cAHat, radius) in hard or soft mode, (c_hard, r_hard, c_soft, r_soft) in both. alpha
        must lie in (0, 1/2) (`rs.stats.check_alpha`); a bad argument raises `plumbing.errors.BadArgument` (a
        UsageError and a ValueError).
        """
        result: tuple = ()
        for c in certificates(self.evidence(x, n0, n, alpha, batch_size, generator), self.sigma, alpha):
            result += c
        return result

    def evidence(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                 generator: Optional[torch.Generator] = None, early_abstain: int = 0,
                 early_generator: Optional[torch.Generator] = None) -> Tuple[Evidence, ...]:
        """CERTIFY's sampling, returning per mode the `rs.stats.Evidence` its certificate is computed from.

        `rs.stats.certificate(e, sigma, alpha)` turns each into (prediction, radius), at this alpha or
        any other, with no further sampling. Selection uses `n0` draws, estimation `n` fresh ones,
        both from `generator`.

        Early abstention (`early_abstain` = M > 0): after selection, M draws from `early_generator` (a
        stream of their own, so the selection and estimation draws are those of the standard
        procedure); when the one-sided (1 - alpha) upper confidence bound on the selected class's
        probability from those M is below 1/2 in every mode (`rs.stats.early_test_abstains`), the
        image abstains without the n draws and its Evidence are the M draws' (`early` True).
        Otherwise the n draws are made as usual and decide alone: a returned certificate is exactly
        the standard one (docs/METHOD.md gives the argument); the M draws' statistics are kept
        beside them (`early_test`), so that the test can be replayed at another alpha.

        Returns a tuple of Evidence, one per mode (hard first).
        """
        n0, n, batch_size = _count('n0', n0), _count('n', n), _count('batch_size', batch_size)
        early_abstain = _count('early_abstain', early_abstain, least=0)
        _alpha(alpha)
        self.base_classifier.eval()
        selection = self.tally(x, n0, batch_size, generator)
        chosen = {}
        if self._hard:
            chosen['hard'] = int(np.argmax(selection.counts))
        if self._soft:
            chosen['soft'] = int(np.argmax(selection.scores))
        counts0 = tuple(int(c) for c in selection.counts) if self._hard else None
        tests: Tuple[Evidence, ...] = ()
        if early_abstain > 0:
            tests = self._evidence(chosen, self.tally(x, early_abstain, batch_size, early_generator),
                                   early_abstain, counts0)
            if early_test_abstains(tests, alpha):
                return tuple(dataclasses.replace(t, early=True) for t in tests)
        estimation = self._evidence(chosen, self.tally(x, n, batch_size, generator), n, counts0)
        if tests:
            estimation = tuple(dataclasses.replace(e, early_test=t) for e, t in zip(estimation, tests))
        return estimation

    @staticmethod
    def _evidence(chosen, tally, n, counts0):
        out = ()
        if 'hard' in chosen:
            c = chosen['hard']
            out += (Evidence('hard', c, n, nA=int(tally.counts[c]), counts0=counts0),)
        if 'soft' in chosen:
            c = chosen['soft']
            out += (Evidence('soft', c, n, sum=float(tally.scores[c]), sum_sq=float(tally.squares[c])),)
        return out

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: Optional[torch.Generator] = None) -> Union[int, Tuple[int, int]]:
        """Cohen et al. 2019, PREDICT: the smoothed prediction at x, or ABSTAIN.

        Hard: with nA, nB the two largest counts of n noisy copies, abstain when the two-sided
        binomial test of nA successes in nA + nB draws at p = 1/2 has p-value > alpha; the returned
        class is g(x) with probability at least 1 - alpha. Soft (not in the paper): the class with
        the largest summed score, returned only when its empirical Bernstein lower bound at level
        alpha / num_classes (a union bound over the classes) exceeds 1/2, so it too is the soft
        smoothed classifier's prediction with probability at least 1 - alpha.

        Returns one class in hard or soft mode, (c_hard, c_soft) in both.
        """
        n, batch_size = _count('n', n), _count('batch_size', batch_size)
        _alpha(alpha)
        self.base_classifier.eval()
        tally = self.tally(x, n, batch_size, generator)
        result: tuple = ()
        if self._hard:
            top2 = np.argsort(-tally.counts, kind='stable')[:2]
            nA, nB = int(tally.counts[top2[0]]), int(tally.counts[top2[1]])
            result += (Smooth.ABSTAIN if binomial_pvalue(nA, nB) > alpha else int(top2[0]),)
        if self._soft:
            cA = int(np.argmax(tally.scores))
            lower = bernstein_lower_bound(tally.scores[cA], tally.squares[cA], n, alpha / self.num_classes)
            result += (cA if lower > 0.5 else Smooth.ABSTAIN,)
        return result[0] if len(result) == 1 else result

    def tally(self, x: torch.Tensor, num: int, batch_size: int, generator: Optional[torch.Generator] = None) -> Tally:
        """Tally f(x + d) over `num` draws of d ~ N(0, sigma^2 I), `batch_size` at a time.

        All tallies stay on the device (no host synchronisation inside the loop); returns a
        `Tally` of numpy arrays. Raises `NonFiniteOutput` when the network gives a NaN or infinite
        logit (its argmax would be meaningless) or, in soft mode, when a score softmax(beta * logits)
        is NaN (beta times finite logits can overflow): no certificate may be built on them.
        Raises `BatchTooLarge` when a batch of min(batch_size, num) noisy copies does not fit.
        """
        device = self.device
        x = x.to(device)
        size = min(batch_size, num)  # the largest batch this call makes: never allocate for more
        need = size * x.numel() * x.element_size()
        if self.memory is not None and need > self.memory:
            raise BatchTooLarge(f'a batch of {size} noisy copies of a {"x".join(map(str, x.shape))} image needs '
                                f'{_size(need)}, more than the {_size(self.memory)} of memory of {device}')
        try:
            return self._tally(x, num, size, generator)
        except (RuntimeError, MemoryError) as e:
            if not out_of_memory(e):
                raise
            raise BatchTooLarge(f'a batch of {size} noisy copies of a {"x".join(map(str, x.shape))} image does not '
                                f'fit in the memory of {device} ({str(e).strip().splitlines()[0][:160]})') from None

    def _tally(self, x: torch.Tensor, num: int, size: int, generator: Optional[torch.Generator]) -> Tally:
        device, C = self.device, self.num_classes
        counts = torch.zeros(C, dtype=torch.long, device=device) if self._hard else None
        scores = torch.zeros(C, dtype=torch.float64, device=device) if self._soft else None
        squares = torch.zeros(C, dtype=torch.float64, device=device) if self._soft else None
        ones = torch.ones(size, dtype=torch.long, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        with torch.inference_mode():
            # one buffer for every batch: a fresh batch-sized tensor each time costs the allocator (and,
            # on CPU, page faults) about as much as drawing the noise. normal_(0, sigma) draws exactly
            # the values of randn(...) * sigma, with one pass over the memory instead of two.
            buffer = torch.empty((size, *x.shape), device=device, dtype=x.dtype)
            remaining = num
            while remaining > 0:
                b = min(size, remaining)
                remaining -= b
                batch = buffer[:b].normal_(0.0, self.sigma, generator=generator).add_(x)
                logits = self.base_classifier(batch)
                finite &= torch.isfinite(logits).all()  # on the device: read once, after the loop
                if counts is not None:
                    # scatter_add_, unlike bincount, needs no host sync to size its output
                    counts.scatter_add_(0, logits.argmax(1), ones[:b])
                if scores is not None and squares is not None:
                    p = F.softmax(self.beta * logits.float(), dim=1)
                    scores += p.sum(0, dtype=torch.float64)
                    squares += (p * p).sum(0, dtype=torch.float64)
            # a NaN score (beta * logits overflowing) stays NaN in the sums: one check after the loop
            scored = torch.isfinite(scores).all() & torch.isfinite(squares).all() if scores is not None and \
                squares is not None else torch.ones((), dtype=torch.bool, device=device)
            flags = torch.stack([finite, scored]).tolist()  # the call's one sync point before the tallies' copy
        if not flags[0]:
            raise NonFiniteOutput('the network gave NaN or infinite outputs on noisy copies of the image')
        if not flags[1]:
            raise NonFiniteOutput(f'the soft scores softmax(beta * logits) are NaN on noisy copies of the image (beta '
                                  f'{self.beta:g} times the logits overflows)', scores=True)
        as_numpy = (lambda t: None if t is None else t.cpu().numpy())
        return Tally(as_numpy(counts), as_numpy(scores), as_numpy(squares))
