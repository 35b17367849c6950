"""Smooth against models whose smoothed probabilities are known exactly."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import norm

from rs.core import Smooth, image_generator
from rs.stats import binomial_pvalue, lower_confidence_bound


class Linear2(nn.Module):
    """Two classes: logits [0, w.x + b]. Under noise, w.(x+d) + b ~ N(m, (sigma |w|)^2), so
    P(class 1) = Phi(m / (sigma |w|)) and the exact certified radius is m / |w|, the distance to
    the decision boundary."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        z = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


def linear_case(distance, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.rand(1, 2, 2, generator=g, dtype=torch.float64)
    # choose b so that x lies `distance` from the boundary on the class-1 side
    b = distance * w.norm() - (w * x).sum()
    return Linear2(w, b), x


def exact_soft_radius(model, distance, sigma, beta):
    """sigma * Phi^-1(Z_1), Z_1 = E[sigmoid(beta * (m + s t))], t ~ N(0, 1), by Gauss-Hermite quadrature."""
    m, s = distance * model.w.norm().item(), sigma * model.w.norm().item()
    t, wts = np.polynomial.hermite_e.hermegauss(200)
    z1 = float((wts / wts.sum() / (1 + np.exp(-beta * (m + s * t)))).sum())
    return sigma * norm.ppf(z1)


@pytest.mark.parametrize('mode,seed,sizes,tolerance', [
    ('hard', 0, (1000, 10000, 100000, 1000000), 0.015),  # the exact radius is the distance: pA = Phi(1) = 0.84
    ('hard', 1, (1000, 10000, 100000, 1000000), 0.015),
    ('hard', 2, (1000, 10000, 100000, 1000000), 0.015),
    ('soft', 0, (1000, 100000, 1000000), 0.03)])
def test_radius_below_and_converging_to_the_exact_radius(mode, seed, sizes, tolerance):
    sigma, distance, beta = 0.5, 0.5, 2.0
    model, x = linear_case(distance, seed)
    exact = distance if mode == 'hard' else exact_soft_radius(model, distance, sigma, beta)
    smooth = Smooth(model, 2, sigma, 'cpu', mode=mode, beta=beta)
    gaps = []
    for n in sizes:
        c, r = smooth.certify(x, 100, n, 0.001, 100000, generator=torch.Generator().manual_seed(seed + 3 * (mode == 'soft')))
        assert c == 1
        assert r <= exact
        gaps.append(exact - r)
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < tolerance * exact


def test_on_the_boundary_certify_abstains_and_predict_mostly_abstains():
    model, x = linear_case(0.0)
    smooth = Smooth(model, 2, 0.25, 'cpu', mode='hard')
    assert smooth.certify(x, 100, 10000, 0.001, 10000, generator=torch.Generator().manual_seed(0)) == (-1, 0.0)
    abstained = sum(smooth.predict(x, 1000, 0.05, 1000, generator=torch.Generator().manual_seed(s)) == -1
                    for s in range(40))
    assert abstained >= 34  # the test's level is 0.05: at most ~2 of 40 should answer


class Scripted(nn.Module):
    """A 'model' whose argmax classes are a fixed script, whatever the input: exact counts."""

    def __init__(self, classes, num_classes, soft_value=None):
        super().__init__()
        self.classes, self.num_classes, self.pos = torch.as_tensor(classes), num_classes, 0

    def forward(self, x):
        b = x.shape[0]
        out = self.classes[self.pos:self.pos + b]
        self.pos += b
        return 50.0 * torch.nn.functional.one_hot(out, self.num_classes).float()


def test_certify_radius_is_exactly_the_clopper_pearson_radius():
    n0, n, alpha, sigma = 20, 200, 0.001, 0.5
    for nA in range(90, 201, 10):
        # selection: class 2 wins 15 of 20; estimation: class 2 nA times, class 0 otherwise
        script = [2] * 15 + [1] * 5 + [2] * nA + [0] * (n - nA)
        smooth = Smooth(Scripted(script, 4), 4, sigma, 'cpu')
        c, r = smooth.certify(torch.zeros(1, 2, 2), n0, n, alpha, 64)
        p = lower_confidence_bound(nA, n, alpha)
        if p < 0.5:
            assert (c, r) == (-1, 0.0)
        else:
            assert c == 2 and r == pytest.approx(sigma * norm.ppf(p), rel=1e-12)
    assert any(lower_confidence_bound(nA, n, alpha) < 0.5 for nA in range(90, 201, 10))


def test_predict_abstains_exactly_when_the_binomial_test_fails():
    n, alpha = 100, 0.05
    seen = set()
    for nA in range(50, 80):
        nB = n - nA - 3
        script = [1] * nA + [3] * nB + [0] * 3
        smooth = Smooth(Scripted(script, 5), 5, 0.25, 'cpu')
        out = smooth.predict(torch.zeros(1, 2, 2), n, alpha, 32)
        should_abstain = binomial_pvalue(nA, nB) > alpha
        assert out == (-1 if should_abstain else 1)
        seen.add(should_abstain)
    assert seen == {True, False}


def test_both_mode_equals_hard_and_soft_on_the_same_noise():
    model, x = linear_case(0.3)
    runs = {}
    for mode in ('hard', 'soft', 'both'):
        smooth = Smooth(model, 2, 0.5, 'cpu', mode=mode, beta=4.0)
        runs[mode] = smooth.certify(x, 100, 5000, 0.001, 1000, generator=torch.Generator().manual_seed(7))
    assert runs['both'] == runs['hard'] + runs['soft']
    assert len(runs['both']) == 4


def test_each_image_has_its_own_reproducible_noise_stream():
    a = torch.randn(5, generator=image_generator(0, 17, 'cpu'))
    b = torch.randn(5, generator=image_generator(0, 17, 'cpu'))
    c = torch.randn(5, generator=image_generator(0, 18, 'cpu'))
    d = torch.randn(5, generator=image_generator(1, 17, 'cpu'))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Smooth(nn.Identity(), 2, 0.0, 'cpu')
    with pytest.raises(ValueError):
        Smooth(nn.Identity(), 2, 0.25, 'cpu', mode='median')


def test_evidence_gives_the_certificate_at_any_alpha_and_early_abstention_stops_only_clear_losers():
    from rs.stats import certificate, upper_confidence_bound
    n0, n, M = 20, 200, 50
    x = torch.zeros(1, 2, 2)
    # selection: class 2 wins; estimation: class 2 in 150 of 200 draws
    script = [2] * 15 + [1] * 5 + [2] * 150 + [0] * 50
    (e,) = Smooth(Scripted(script, 4), 4, 0.5, 'cpu').evidence(x, n0, n, 0.001, 64)
    assert (e.cAHat, e.nA, e.n, e.counts0, e.early) == (2, 150, 200, (0, 5, 15, 0), False)
    for alpha in (0.001, 0.01, 0.2):
        assert certificate(e, 0.5, alpha) == (2, pytest.approx(0.5 * norm.ppf(lower_confidence_bound(150, 200, alpha))))
    # early test: 10 of 50 early draws for class 2 bound its probability below 1/2, so no estimation draws
    early = Scripted([2] * 15 + [1] * 5 + [2] * 10 + [3] * 40 + [2] * 200, 4)
    (e,) = Smooth(early, 4, 0.5, 'cpu').evidence(x, n0, n, 0.001, 64, early_abstain=M)
    assert upper_confidence_bound(10, M, 0.001) < 0.5
    assert (e.early, e.n, e.nA) == (True, M, 10) and certificate(e, 0.5, 0.2) == (-1, 0.0)
    assert early.pos == n0 + M  # the n estimation draws were never made
    # 25 of 50 cannot rule out pA >= 1/2: the standard estimation follows and decides alone
    late = Scripted([2] * 15 + [1] * 5 + [2] * 25 + [3] * 25 + [2] * 150 + [0] * 50, 4)
    (e,) = Smooth(late, 4, 0.5, 'cpu').evidence(x, n0, n, 0.001, 64, early_abstain=M)
    assert (e.early, e.n, e.nA) == (False, 200, 150) and late.pos == n0 + M + n


def test_early_test_statistics_are_kept_and_replayed_at_any_alpha():
    """Issue 18: the early test's M-draw tally is kept beside the n draws', and `certificates` replays the test
    at another alpha, abstaining early exactly where a fresh run at that alpha would."""
    from rs.stats import NoEstimate, certificates, early_test_abstains, upper_confidence_bound
    n0, n, M, x = 20, 200, 50, torch.zeros(1, 2, 2)
    # 20 of 50 early draws: the upper bound passes 1/2 at alpha 0.001 but not at 0.4, so the test lets the image
    # through at 0.001 (the standard estimation certifies it) and would have stopped it at 0.4
    assert upper_confidence_bound(20, M, 0.001) > 0.5 > upper_confidence_bound(20, M, 0.4)
    script = [2] * 15 + [1] * 5 + [2] * 20 + [3] * 30 + [2] * 170 + [0] * 30
    (e,) = Smooth(Scripted(script, 4), 4, 0.5, 'cpu').evidence(x, n0, n, 0.001, 64, early_abstain=M)
    assert (e.early, e.nA, e.early_test.n, e.early_test.nA) == (False, 170, M, 20)
    assert certificates((e,), 0.5, 0.001)[0][0] == 2 and certificates((e,), 0.5, 0.4) == ((-1, 0.0),)
    # the same image certified at 0.4 stops early: at 0.001 it has no estimate to give
    (stopped,) = Smooth(Scripted(script, 4), 4, 0.5, 'cpu').evidence(x, n0, n, 0.4, 64, early_abstain=M)
    assert stopped.early and early_test_abstains([stopped], 0.4)
    with pytest.raises(NoEstimate):
        certificates((stopped,), 0.5, 0.001)


def test_alpha_is_refused_at_one_half_and_where_its_bound_overflows():
    from rs.stats import check_alpha
    assert check_alpha(0.001) == 0.001
    for alpha in (0.5, 0.999999, 0.0, -0.1, float('nan'), 1e-320):
        with pytest.raises(ValueError, match='1/2|overflow'):
            check_alpha(alpha)
    with pytest.raises(ValueError, match='1/2'):
        Smooth(Scripted([0] * 300, 2), 2, 0.5, 'cpu').certify(torch.zeros(1, 2, 2), 20, 200, 0.5, 64)


class Huge(nn.Module):
    """Finite logits near the largest float32: [1e38, 0, ...] whatever the input."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3)
        out[:, 0] = 1e38
        return out


def test_scores_that_overflow_are_refused_though_the_logits_are_finite():
    from rs.core import NonFiniteOutput
    x = torch.zeros(1, 2, 2)
    with pytest.raises(NonFiniteOutput) as caught:
        Smooth(Huge(), 3, 0.5, 'cpu', mode='soft', beta=16.0).certify(x, 20, 200, 0.001, 64)
    assert caught.value.scores
    # hard mode needs only the argmax: the same network certifies class 0
    assert Smooth(Huge(), 3, 0.5, 'cpu', mode='hard').certify(x, 20, 200, 0.001, 64)[0] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_the_tally_syncs_with_the_host_as_often_for_one_batch_as_for_many():
    """The finiteness checks (logits, and the soft scores' sums) stay on the device: a tally reads the host a
    fixed number of times, whatever the number of batches."""
    import warnings
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).cuda()
    smooth = Smooth(model, 3, 0.5, 'cuda', mode='both')
    x = torch.zeros(1, 2, 2, device='cuda')

    def syncs(num):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                smooth.tally(x, num, 64, torch.Generator(device='cuda').manual_seed(0))
            finally:
                torch.cuda.set_sync_debug_mode('default')
        return len(caught)
    assert syncs(64) == syncs(64 * 40)
