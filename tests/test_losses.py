"""The MACER loss against a plain transcription of docs/METHOD.md ("MACER"); the baselines' shapes."""
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from methods.attacks import smoothadv_attack
from methods.losses import gaussian_loss
from macer import macer_loss
from conftest import ROOT
from model import LeNet

SIGMA, LBD, GAMMA, BETA = 0.25, 12.0, 8.0, 16.0


def reference_macer(logits, targets, sigma, lbd, gamma, beta):
    """Algorithm 1, steps 2-4, one point at a time, in float64, with the inverse CDF written via erfinv."""
    phi_inv = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)).icdf
    n, k, C = logits.shape
    L_C = 0.0
    L_R = 0.0
    kept = []
    for i in range(n):
        p = sum(torch.softmax(logits[i, j], dim=0) for j in range(k)) / k
        L_C = L_C - torch.log(p[targets[i]] + 1e-10)
        q = sum(torch.softmax(beta * logits[i, j], dim=0) for j in range(k)) / k
        order = sorted(range(C), key=lambda c: -float(q[c].detach()))
        top1, top2 = order[0], order[1]
        if top1 != int(targets[i]):
            continue  # not in G: misclassified by the soft smoothed classifier
        xi = phi_inv(q[top1]) - phi_inv(q[top2])
        if not math.isfinite(float(xi.detach())) or float(xi.detach()) > gamma:
            continue  # q1 rounds to 1, or beyond the hinge
        kept.append(i)
        L_R = L_R + sigma / 2 * (gamma - xi)
    return (L_C + lbd * L_R) / n, L_C / n, L_R / n, kept


def designed_logits():
    """Points that exercise every mask: kept, misclassified, q1 rounding to 1, beyond the hinge."""
    g = torch.Generator().manual_seed(0)
    logits = 0.3 * torch.randn(8, 4, 5, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    logits[0, :, 0] += 0.5                      # 0: right, close call -> kept
    logits[1, :, 3] += 1.0                      # 1: top-1 is 3, not 1 -> not in G
    logits[2, :, 2] += 60.0                     # 2: q1 == 1 in float64 -> xi infinite
    logits[3, :, 3] += 1.5                      # 3: xi between 8 and infinity -> beyond the hinge
    logits[4, :, 4] += 0.35                     # 4: kept
    logits[5, :, 0] += 0.05                     # 5-7: whatever the draw gives
    return logits, targets


def test_designed_points_hit_every_mask():
    logits, targets = designed_logits()
    *_, kept = reference_macer(logits, targets, SIGMA, LBD, GAMMA, BETA)
    q = torch.softmax(BETA * logits, dim=2).mean(1)
    assert 0 in kept and 4 in kept
    assert 1 not in kept and int(q[1].argmax()) != 1
    assert 2 not in kept and float(q[2].max()) == 1.0
    top2 = q[3].topk(2).values
    xi3 = Normal(0.0, 1.0).icdf(top2[0]) - Normal(0.0, 1.0).icdf(top2[1])
    assert 3 not in kept and GAMMA < float(xi3) < math.inf


def test_value_and_gradient_equal_the_reference():
    logits, targets = designed_logits()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    loss, cl, rl = macer_loss(a, targets, sigma=SIGMA, lbd=LBD, gamma=GAMMA, beta=BETA)
    ref_loss, ref_cl, ref_rl, _ = reference_macer(b, targets, SIGMA, LBD, GAMMA, BETA)
    for mine, ref in ((loss, ref_loss), (cl, ref_cl), (rl, ref_rl)):
        assert float(mine.detach()) == pytest.approx(float(ref.detach()), rel=1e-10, abs=1e-12)
    loss.backward()
    ref_loss.backward()
    assert torch.isfinite(a.grad).all()
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-11)
    # the excluded points still get the classification gradient, and no robustness gradient
    only_cl = logits.clone().requires_grad_(True)
    macer_loss(only_cl, targets, sigma=SIGMA, lbd=0.0, gamma=GAMMA, beta=BETA)[0].backward()
    for i in (1, 2, 3):
        assert torch.allclose(a.grad[i], only_cl.grad[i], atol=1e-12)
    assert not torch.allclose(a.grad[0], only_cl.grad[0])


def test_parts_are_sums_over_the_whole_batch():
    logits, targets = designed_logits()
    loss, cl, rl = macer_loss(logits, targets, sigma=SIGMA, lbd=LBD, gamma=GAMMA, beta=BETA)
    assert float(loss) == pytest.approx(float(cl + LBD * rl))
    # doubling the batch with points that are all excluded halves the robustness part
    more = torch.cat([logits, logits[[1, 2, 3]]])
    t_more = torch.cat([targets, targets[[1, 2, 3]]])
    _, _, rl_more = macer_loss(more, t_more, sigma=SIGMA, lbd=LBD, gamma=GAMMA, beta=BETA)
    assert float(rl_more) == pytest.approx(float(rl) * 8 / 11)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('beta', [BETA, 1e4, 1e6])
@pytest.mark.parametrize('scale', [1.0, 1e3])
def test_finite_in_low_precision_even_when_q1_is_one(dtype, beta, scale):
    # scale 1e3: every softmax saturates, the true class's probability is exactly 1 or exactly 0
    logits, targets = designed_logits()
    x = (logits * scale).to(dtype).requires_grad_(True)
    loss, cl, rl = macer_loss(x, targets, sigma=SIGMA, lbd=LBD, gamma=GAMMA, beta=beta)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cl) and torch.isfinite(rl)
    assert torch.isfinite(x.grad.float()).all()


def test_equals_the_public_codes_loss_in_float32():
    """Where the public code's float32 Normal.icdf is accurate, the two losses and gradients agree."""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    import original
    g = torch.Generator().manual_seed(3)
    logits = (0.4 * torch.randn(64, 16, 10, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 10, (64,), generator=g)
    logits.data[torch.arange(64), :, targets] += 0.3  # mostly right, most points inside the hinge
    mine = macer_loss(logits, targets, sigma=SIGMA, lbd=LBD, gamma=GAMMA, beta=BETA)
    theirs = original.macer_objective(logits, targets, sigma=SIGMA, lbd=LBD, beta=BETA, gamma=GAMMA)
    for a, b in zip(mine, theirs):
        assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-4)
    ga, = torch.autograd.grad(mine[0], logits)
    gb, = torch.autograd.grad(theirs[0], logits)
    assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-6)
    assert 0 < float(mine[2].detach()) and float(mine[1].detach()) > 0


def test_macer_with_k1_and_no_lambda_is_gaussian_training():
    g = torch.Generator().manual_seed(1)
    net = LeNet()
    x = torch.rand(16, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    noise = 0.25 * torch.randn(16, 1, 1, 28, 28, generator=g)
    logits = net((x.unsqueeze(1) + noise).flatten(0, 1)).detach().view(16, 1, 10)
    m, _, _ = macer_loss(logits, y, sigma=0.25, lbd=0.0, gamma=GAMMA, beta=BETA)
    gl, _, _ = gaussian_loss(logits, y)
    assert float(m) == pytest.approx(float(gl), rel=1e-6)
    assert float(gl) == pytest.approx(float(F.cross_entropy(logits[:, 0], y)), rel=1e-6)


def test_smoothadv_stays_in_the_ball_and_the_box_and_raises_the_smoothed_loss():
    torch.manual_seed(0)
    net = LeNet().train()
    x = torch.rand(12, 1, 28, 28)
    x[:4] = 0.0  # images on the box's corner: the clamp matters
    y = torch.randint(0, 10, (12,))
    noise = 0.25 * torch.randn(12, 4, 1, 28, 28)
    eps = 0.5
    adv, random_directions = smoothadv_attack(net, x, y, noise, epsilon=eps, num_steps=5)
    assert int(random_directions) == 0  # every image had a gradient
    assert net.training  # mode given back
    delta = (adv - x).flatten(1).norm(dim=1)
    assert (delta <= eps + 1e-5).all() and (delta > 0.1).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0

    def smoothed_loss(z):
        net.eval()
        with torch.no_grad():
            p = F.softmax(net((z.unsqueeze(1) + noise).flatten(0, 1)).view(12, 4, 10), dim=2).mean(1)
        net.train()
        return -torch.log(p.gather(1, y[:, None]).squeeze(1))
    assert (smoothed_loss(adv) > smoothed_loss(x)).all()
    assert smoothadv_attack(net, x, y, noise, epsilon=0.0, num_steps=5)[0] is x
