"""Sequential certification at fixed radii: the statistics (`Plan`, `decide`) and the sampler that keeps the
device full while images stop at different moments (`certify_images`).

The question a table asks of an image is not "what radius" but "is it certified at r" for a few radii r. For
the selected class cAHat that is the test of pA >= Phi(r / sigma), and such a test can often be decided with
far fewer than N samples. The procedure (docs/METHOD.md, "Sequential certification"):

- the prediction cAHat is CERTIFY's: the most frequent class of N0 selection draws, from the same noise;
- estimation draws are counted at a fixed schedule of looks n_1 < n_2 < ... < n_K = N (a factor GROWTH
  apart, from FIRST_LOOK), fixed by N alone before any sample is drawn;
- at look k the one-sided Clopper-Pearson bounds on pA at level alpha_k are computed, with the levels
  spent once: FINAL_SHARE of alpha at the last look (so a certificate that needs all N draws is almost
  CERTIFY's own) and the rest split evenly over the earlier looks. By the union bound every lower bound of
  every look holds at once with probability at least 1 - sum alpha_k = 1 - alpha, so the largest of them
  is a lower bound on pA whenever the procedure stops, whatever made it stop;
- a radius is certified once that largest lower bound reaches its threshold Phi(r / sigma), and given up
  (futile) once an upper bound at the look's level is below the threshold, or once even N successes in
  every remaining draw could not certify it at the last look. Giving up never harms validity; it can only
  lose a certificate, and for an image whose pA does clear the threshold it does so with probability at
  most alpha (the upper bounds hold with the same union bound);
- the image stops when every radius is decided, or at N. Its row: cAHat with the largest certified radius
  of the grid (the grid always holds 0, whose threshold 1/2 is CERTIFY's abstention), or an abstention.

Why a union bound over a fixed schedule and not a confidence sequence: with about 20 geometric looks the
price is ln(20 / 0.2) ~ 4.6 nats of log-level at early looks, which costs a pA = 1 image under 10% more
samples than an oracle test, while each look's test stays the exact Clopper-Pearson test the field trusts,
needs no tuning, and can be replayed at another alpha from the kept counts (`decide`), which is what
recomputation needs. Betting confidence sequences (Voracek 2024) are tighter for intermediate pA but are
not exact finite-sample tests of a fixed form, and their replay needs every draw; the adaptive scheme of
Horvath et al. (2022) is the same union-bound idea with two or three stages.
"""
import functools
import math
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import norm

from rs.stats import lower_confidence_bound, upper_confidence_bound

FIRST_LOOK = 100  # the first look's estimation draws (fewer when N is smaller)
GROWTH = 1.5  # each look's draws at least this factor above the one before
FINAL_SHARE = 0.8  # the share of alpha spent at the last look (N draws)


def look_sizes(N: int) -> Tuple[int, ...]:
    """The cumulative estimation draws at each look: FIRST_LOOK, then a factor GROWTH more each time, then N."""
    sizes, n = [], min(FIRST_LOOK, N)
    while n < N:
        sizes.append(n)
        n = max(n + 1, math.ceil(n * GROWTH))
    sizes.append(N)
    return tuple(sizes)


def look_levels(looks: int, alpha: float) -> Tuple[float, ...]:
    """Each look's level: FINAL_SHARE * alpha at the last, the rest split evenly over the earlier; they sum to alpha."""
    if looks == 1:
        return (alpha,)
    early = (1 - FINAL_SHARE) * alpha / (looks - 1)
    return (early,) * (looks - 1) + (FINAL_SHARE * alpha,)


def grid_of(radii: Iterable[float]) -> Tuple[float, ...]:
    """The radii a sequential run decides: those asked for, sorted, once each, with 0 (abstain or not)."""
    return tuple(sorted({0.0, *(float(r) for r in radii)}))


@dataclass(frozen=True)
class Plan:
    """The thresholds of one sequential certification, fixed before any draw: the grid radii, their
    thresholds Phi(r / sigma) on pA, the looks (cumulative estimation draws) and each look's level."""
    radii: Tuple[float, ...]
    thresholds: Tuple[float, ...]
    looks: Tuple[int, ...]
    levels: Tuple[float, ...]
    N: int
    alpha: float

    @classmethod
    def make(cls, radii: Iterable[float], sigma: float, N: int, alpha: float) -> 'Plan':
        grid = grid_of(radii)
        looks = look_sizes(int(N))
        return cls(grid, tuple(float(norm.cdf(r / sigma)) for r in grid), looks, look_levels(len(looks), alpha),
                   int(N), float(alpha))


@dataclass(frozen=True)
class Decision:
    """Where an image's test stands after the looks so far: `done` (every radius decided, or N drawn) and the
    index in the grid of the largest radius certified (None: not even radius 0, i.e. abstain)."""
    done: bool
    top: Optional[int]


def decide(plan: Plan, counts: Sequence[int]) -> Decision:
    """The decision after the looks whose cumulative successes (draws of cAHat) are `counts` (one per look
    made, in order). The same function decides while sampling and when a run is checked or recomputed."""
    best_lower, least_upper = 0.0, 1.0
    k = len(counts) - 1
    for j, a in enumerate(counts):
        lower, upper = _bounds(int(a), plan.looks[j], plan.levels[j])
        best_lower, least_upper = max(best_lower, lower), min(least_upper, upper)
    certified = [t <= best_lower for t in plan.thresholds]
    top = max((i for i, c in enumerate(certified) if c), default=None)
    if k == len(plan.looks) - 1:
        return Decision(True, top)
    a, n = int(counts[-1]), plan.looks[k]
    # the best the last look could still give: every remaining draw a success
    reachable = _bounds(a + plan.N - n, plan.N, plan.levels[-1])[0]
    undecided = [i for i, t in enumerate(plan.thresholds)
                 if not certified[i] and t <= least_upper and t <= reachable]
    return Decision(not undecided, top)


@functools.lru_cache(maxsize=1 << 16)
def _bounds(a: int, n: int, level: float) -> Tuple[float, float]:
    """The one-sided Clopper-Pearson (lower, upper) bounds of a look; cached, as `decide` goes over the looks
    before it again at each look."""
    return lower_confidence_bound(a, n, level), upper_confidence_bound(a, n, level)


def certificate_of(plan: Plan, cAHat: int, counts: Sequence[int]) -> Tuple[int, float]:
    """(prediction, radius) of a finished test: cAHat with the largest certified grid radius, or (-1, 0)."""
    d = decide(plan, counts)
    return (-1, 0.0) if d.top is None else (int(cAHat), plan.radii[d.top])


def replay(plan: Plan, counts: Sequence[int]) -> Optional[int]:
    """How many of the kept looks a test at `plan` (another alpha, say) makes before it stops; None when it
    would go on past the last kept look, which ended before N (its draws were never made)."""
    for j in range(len(counts)):
        if decide(plan, counts[:j + 1]).done:
            return j + 1
    return None


# --- the sampler: every image whose test goes on shares the device's batches ---------------------------

@dataclass
class _Image:
    idx: int
    label: int
    x: object  # the image on the device
    generator: object
    chunks: List[int]  # the draws still to make for the current phase, in the sizes they are drawn in
    counts0: Optional[np.ndarray] = None  # the selection draws' class counts, filled during selection
    cAHat: Optional[int] = None
    successes: int = 0
    counts: Optional[List[int]] = None  # cumulative successes at each look made
    seconds: float = 0.0

    @property
    def pending(self) -> int:
        return sum(self.chunks)


class NonFiniteImage(ArithmeticError):
    """The network's outputs on noisy copies of image `idx` were NaN or infinite."""

    def __init__(self, idx: int):
        super().__init__(f'image {idx}')
        self.idx = idx


def _split(n: int, batch: int) -> List[int]:
    """n draws in the sizes they are drawn in: full batches, then the rest (as `rs.core.Smooth.tally` does)."""
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def certify_images(smoothed, plan: Plan, images: Iterator[Tuple[int, object, int]], N0: int, batch: int,
                   generator_of, num_classes: int) -> Iterator[Tuple[int, int, Tuple[int, ...], int, List[int], float]]:
    """Sequential certification of `images` ((idx, x, label), read as they are needed) with `smoothed`
    (`rs.core.Smooth`, hard mode: its network, sigma and device). Yields (idx, label, counts0, cAHat,
    counts at each look, seconds) as each image's test stops, in the order they stop.

    Noise: image idx draws from `generator_of(idx)` alone, first its N0 selection draws and then its
    estimation draws, each phase in the sizes `_split` gives (selection exactly as `Smooth.tally` draws
    it, so cAHat is CERTIFY's), whatever other images share its batches: its numbers do not depend on which
    images it was certified with, nor on how many stopped early (up to the device's arithmetic, which may
    round one sample's outputs differently in a batch of another size). Each device batch holds up to
    `batch` draws of as many images as it takes to fill it. `seconds`: each batch's time shared out by the
    draws each image had in it.
    """
    import torch
    device, sigma = smoothed.device, smoothed.sigma
    model = smoothed.base_classifier
    model.eval()  # as `Smooth.evidence`: BatchNorm's running statistics, no dropout
    active: List[_Image] = []
    source = iter(images)
    exhausted = False
    buffer = None
    with torch.inference_mode():
        while True:
            # enough images to fill a batch (the pending draws of each are those of its current phase)
            while not exhausted and sum(im.pending for im in active) < batch:
                try:
                    idx, x, label = next(source)
                except StopIteration:
                    exhausted = True
                    break
                x = x.to(device)
                active.append(_Image(int(idx), int(label), x, generator_of(int(idx)), _split(N0, batch)))
            if not active:
                return
            if buffer is None:
                buffer = torch.empty((batch, *active[0].x.shape), device=device, dtype=active[0].x.dtype)
            # pack whole chunks, each image's in its own order, images in the order they came
            taken: List[Tuple[_Image, int]] = []
            used = 0
            for im in active:
                while im.chunks and used + im.chunks[0] <= batch:
                    b = im.chunks.pop(0)
                    buffer[used:used + b].normal_(0.0, sigma, generator=im.generator).add_(im.x)
                    taken.append((im, b))
                    used += b
                if used == batch:
                    break
            t0 = time.perf_counter()
            logits = model(buffer[:used])
            segment = torch.repeat_interleave(torch.arange(len(taken), device=device),
                                              torch.tensor([b for _, b in taken], device=device))
            flat = torch.zeros(len(taken) * num_classes, dtype=torch.long, device=device)
            flat.scatter_add_(0, segment * num_classes + logits.argmax(1), torch.ones_like(segment))
            bad = torch.zeros(len(taken), dtype=torch.long, device=device)
            bad.scatter_add_(0, segment, (~torch.isfinite(logits).all(1)).long())
            counts = flat.view(len(taken), num_classes).cpu().numpy()  # the batch's one synchronisation
            bad = bad.cpu().numpy()
            spent = time.perf_counter() - t0
            for j, (im, b) in enumerate(taken):
                if bad[j]:
                    raise NonFiniteImage(im.idx)
                im.seconds += spent * b / used
                if im.cAHat is None:
                    im.counts0 = counts[j] if im.counts0 is None else im.counts0 + counts[j]
                else:
                    im.successes += int(counts[j][im.cAHat])
            finished = []
            for im in {id(im): im for im, _ in taken}.values():
                if im.chunks:
                    continue  # its phase (selection, or the draws up to its next look) is not over
                if im.cAHat is None:
                    im.cAHat = int(np.argmax(im.counts0))  # np.argmax's rule, as CERTIFY's
                    im.counts = []
                else:
                    im.counts.append(im.successes)
                    if decide(plan, im.counts).done:
                        finished.append(im)
                        continue
                k = len(im.counts)
                im.chunks = _split(plan.looks[k] - (plan.looks[k - 1] if k else 0), batch)
            for im in finished:
                active.remove(im)
                yield im.idx, im.label, tuple(int(c) for c in im.counts0), im.cAHat, list(im.counts), im.seconds
