"""CAT-RS (issue 28), against its formula written out here from the authors' code (alinlab/smoothing-catrs@d4bc576e,
`code/train_catrs.py`), image by image and copy by copy, in float64: the loss (values and gradients), the attack on
the noise, and the whole step on a small BatchNorm network; its smoothed predictions from a certification of the
training set; exact resume on digits; the presets of its authors' rows. And the method table itself: a method added
to it in this test trains, resumes exactly and records only its flags."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cli
import main
import train
from conftest import ROOT
from methods import METHODS, register
from methods.attacks import catrs_attack
from methods.base import Method, Param, Step, noisy
from methods.losses import catrs_loss, gaussian_loss
from plumbing.errors import UsageError
from plumbing.flagtypes import positive_float
from presets import PRESETS

TOL = 1e-9
GAUSSIAN = os.path.join(ROOT, 'checkpoints', 'digits-gaussian-0.25.pth')


def kl(p, logits):
    """KL(p || softmax(logits)) with 0 log 0 = 0, as F.kl_div(log_softmax(logits), p).sum() gives it."""
    q = torch.log_softmax(logits, 0)
    return sum(p[c] * (torch.log(p[c]) - q[c]) for c in range(len(p)) if p[c] > 0)


def reference_loss(z, z_adv, y, p, accepted, lbd):
    """Their lines 178-196, per image: the K smallest of the m cross-entropies, summed and divided by m; where K = m,
    lbd times the largest KL of an attacked copy from p; the mean over the images."""
    n, m = z.shape[:2]
    total, cl, rob = 0, 0, 0
    for i in range(n):
        ces = sorted((F.cross_entropy(z[i, j][None], y[i][None]) for j in range(m)), key=lambda v: float(v.detach()))
        xent = sum(ces[:int(accepted[i])]) / m
        worst = max((kl(p[i], z_adv[i, j]) for j in range(m)), key=lambda v: float(v.detach()))
        r = lbd * worst * (1.0 if int(accepted[i]) == m else 0.0)
        cl, rob, total = cl + xent, rob + r, total + xent + r
    return total / n, cl / n, rob / n


def compare(mine, ref, inputs):
    worst = max(abs(float(a.detach()) - float(b.detach())) for a, b in zip(mine, ref))
    for g_mine, g_ref in zip(torch.autograd.grad(mine[0], inputs, allow_unused=True),
                             torch.autograd.grad(ref[0], inputs, allow_unused=True)):
        if g_mine is not None or g_ref is not None:
            worst = max(worst, float((g_mine - g_ref).abs().max()))
    return worst


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_catrs_loss_equals_its_formula(seed):
    g = torch.Generator().manual_seed(seed)
    n, m, C = 6, 4, 5
    z = (3 * torch.randn(n, m, C, generator=g, dtype=torch.float64)).requires_grad_(True)
    z_adv = (3 * torch.randn(n, m, C, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, C, (n,), generator=g)
    p = torch.softmax(2 * torch.randn(n, C, generator=g, dtype=torch.float64), 1)
    p[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)  # a one-hot vote: 0 log 0 = 0
    accepted = torch.tensor([1, 4, 2, 4, 3, 1])
    mine = catrs_loss(z, z_adv, y, p, accepted, lbd=0.7)
    assert compare(mine, reference_loss(z, z_adv, y, p, accepted, 0.7), (z, z_adv)) < TOL
    # with no image accepting every copy, no KL term
    assert float(catrs_loss(z, z_adv, y, p, torch.ones(n, dtype=torch.long), lbd=5.0)[2].detach()) == 0.0


class Small(nn.Module):
    """A small network with BatchNorm on 1x4x4 images, float64: fixed weights."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.fc1, self.bn, self.fc2 = nn.Linear(16, 12).double(), nn.BatchNorm1d(12).double(), nn.Linear(12, 4).double()
        with torch.no_grad():
            for p in list(self.fc1.parameters()) + list(self.fc2.parameters()):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x.flatten(1)))))


def reference_attack(net, x, p, noises, eps, T):
    """Their KL_PGD.attack, on a list of m noise tensors [n, ...]: the copies concatenated, the summed loss
    (1/m) sum_j sum_i KL(p_i || softmax f(x_i + d_ij)), gradient normalised per row, a step of 2 eps / T, the
    perturbation of each row renormed to eps around its original draw, then each row's mean and RMS put back."""
    m = len(noises)
    x_r = x.repeat(m, 1, 1, 1)
    noise0 = torch.cat(noises, 0)
    flat0 = noise0.flatten(1)
    mu0, s0 = flat0.mean(1), flat0.pow(2).mean(1).sqrt()
    noise = noise0.detach()
    net.eval()
    for _ in range(T):
        noise = noise.detach().requires_grad_(True)
        logits = net(x_r + noise).chunk(m)
        loss = sum(F.kl_div(F.log_softmax(lo, 1), p, reduction='none').sum(1) for lo in logits)
        loss = (loss / m).sum()
        grad, = torch.autograd.grad(loss, noise)
        rows = []
        for r in range(noise.shape[0]):
            gr = grad[r] / (grad[r].norm() + 1e-8)
            moved = noise[r].detach() + 2 * eps / T * gr
            eta = moved - noise0[r]
            norm = float(eta.norm())
            eta = eta * (eps / (norm + 1e-7)) if norm > eps else eta
            v = noise0[r] + eta
            v = (v - v.mean()) / v.pow(2).mean().sqrt() * s0[r] + mu0[r]
            rows.append(v)
        noise = torch.stack(rows).detach()
    net.train()
    return noise.chunk(m)


def test_the_attack_on_the_noise_equals_their_kl_pgd():
    net = Small()
    g = torch.Generator().manual_seed(1)
    n, m = 5, 3
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    p = torch.softmax(torch.randn(n, 4, generator=g, dtype=torch.float64), 1)
    noise = 0.25 * torch.randn(n, m, 1, 4, 4, generator=g, dtype=torch.float64)
    net.train()
    mine = catrs_attack(net, x, p, noise, epsilon=0.5, num_steps=3)
    ref = reference_attack(net, x, p, [noise[:, j] for j in range(m)], 0.5, 3)
    assert torch.allclose(mine, torch.stack(ref, 1), atol=1e-10) and net.training
    assert not torch.equal(mine, noise)  # it moved


def reference_step(net, x, y, p, sigma, m, eps, T, lbd, confidence_mask):
    """Their lines 146-196 for one chunk, drawing as `training_step` draws: the noise [n, m, ...] first (one draw,
    where they draw m), the forward passes in train mode, the attack in eval mode, then the binomial."""
    n = x.shape[0]
    noise = torch.randn((n, m, *x.shape[1:]), dtype=x.dtype) * sigma
    noises0 = [noise[:, j] for j in range(m)]
    logits0 = net(torch.cat([x + d for d in noises0])).chunk(m)
    t_sm = sum(F.one_hot(lo.argmax(1), lo.shape[1]).double() for lo in logits0).detach() / m
    noises = reference_attack(net, x, p, noises0, eps, T)
    logits = net(torch.cat([x + d for d in noises])).chunk(m)
    w = (p if confidence_mask else t_sm).gather(1, y[:, None]).squeeze(1)
    accept = torch.binomial(torch.full_like(w, float(m)), w).long().clamp(min=1)
    z = torch.stack(logits0, 1)
    z_adv = torch.stack(logits, 1)
    return reference_loss(z, z_adv, y, p, accept, lbd)


@pytest.mark.parametrize('mask', [False, True])
def test_the_whole_catrs_step_on_a_batchnorm_network_equals_their_code(mask):
    g = torch.Generator().manual_seed(2)
    n, m = 6, 4
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g)
    p = torch.softmax(2 * torch.randn(n, 4, generator=g, dtype=torch.float64), 1)
    method, hyper = train.step_setup('catrs', 0.25, num_noise_vec=m, epsilon=0.5, num_steps=2, lbd=1.5,
                                     confidence_mask=mask)
    hyper.prepared = p
    nets = [Small(), Small()]
    for net in nets:
        net.train()
    torch.manual_seed(11)
    out = train.training_step(nets[0], x, y, method, hyper, [torch.arange(n)])
    torch.manual_seed(11)
    ref = reference_step(nets[1], x, y, p, 0.25, m, 0.5, 2, 1.5, mask)
    mine = (out.loss, out.classification, out.robustness)
    for a, b in zip(mine, ref):
        assert abs(float(a) - float(b)) < TOL
    for pa, pb in zip(torch.autograd.grad(out.loss, list(nets[0].parameters())),
                      torch.autograd.grad(ref[0], list(nets[1].parameters()))):
        assert float((pa - pb).abs().max()) < TOL
    # BatchNorm saw both forward passes in train mode, the attack's in eval mode: the same running statistics
    assert torch.allclose(nets[0].bn.running_mean, nets[1].bn.running_mean, atol=1e-12)


@pytest.fixture(scope='module')
def smoothed(tmp_path_factory):
    """A certification of the whole digits training set (797 images) by the shipped Gaussian model: its selection
    votes are CAT-RS's smoothed predictions (their protocol uses N0 10000; 100 here)."""
    folder = tmp_path_factory.mktemp('smoothed')
    assert main.main(['--task', 'test', '--dataset', 'digits', '--split', 'train', '--start_img', '0', '--num_img',
                      '797', '--N0', '100', '--N', '1', '--mode', 'hard', '--resume_ckpt', GAUSSIAN, '--matdir',
                      str(folder), '--name', 'train', '--quiet']) == 0
    return folder / 'train.json'


def test_the_smoothed_predictions_are_the_votes_of_a_certification_of_the_training_set(smoothed, tmp_path):
    from rs.runs import selection_shares
    shares = selection_shares(str(smoothed), 'digits', 797, 10)
    lines = [json.loads(line) for line in open(str(smoothed).replace('.json', '.stats.jsonl'))]
    assert shares.shape == (797, 10) and np.allclose(shares.sum(1), 1.0)
    assert all(np.array_equal(shares[e['idx']], np.array(e['hard']['counts0']) / 100) for e in lines)
    # the Gaussian model is right on most training images: the label's share is large on average
    from data import get_dataset
    labels = get_dataset('digits', '', 'train').targets.numpy()
    assert shares[np.arange(797), labels].mean() > 0.8
    # a certification of the test set, or an edited one, is refused naming the file
    with pytest.raises(UsageError, match='not the digits training set'):
        selection_shares(os.path.join(ROOT, 'reproduce', 'results', 'digits-0.25', 'macer.json'), 'digits', 797, 10)
    import shutil
    shutil.copytree(smoothed.parent, tmp_path / 'edited')
    stats = tmp_path / 'edited' / 'train.stats.jsonl'
    text = stats.read_text().splitlines(True)
    entry = json.loads(text[3])
    counts = entry['hard']['counts0']
    top = counts.index(max(counts))
    counts[top] -= 1  # one vote moved to another class: the row stays what it was, only the digest sees it
    counts[(top + 1) % 10] += 1
    stats.write_text(''.join(text[:3] + [json.dumps(entry) + '\n'] + text[4:]))
    with pytest.raises(UsageError, match='train.stats.jsonl'):
        selection_shares(str(tmp_path / 'edited' / 'train.json'), 'digits', 797, 10)


FAST = ['--task', 'train', '--dataset', 'digits', '--batch_size', '100', '--lr', '0.05', '--quiet']


def run(*args):
    return main.main([str(a) for a in [*FAST, *args]])


def weights_and_log(folder):
    ckpt = torch.load(folder / 'latest.pth', weights_only=True)
    log = [{k: v for k, v in r.items() if k not in ('seconds', 'noisy_images_per_second')} for r in ckpt['history']]
    return ckpt['net'], log, ckpt['args']


def test_catrs_trains_and_resumes_exactly_and_refuses_to_run_without_its_predictions(smoothed, tmp_path, capsys):
    flags = ['--method', 'catrs', '--num_noise_vec', 2, '--num_steps', 2, '--epsilon', 0.5, '--lbd', 1.0,
             '--smoothed_predictions', smoothed]
    assert run(*flags, '--epochs', 2, '--ckptdir', tmp_path / 'straight') == 0
    assert run(*flags, '--epochs', 1, '--ckptdir', tmp_path / 'cut') == 0
    assert run(*flags, '--epochs', 2, '--ckptdir', tmp_path / 'cut', '--resume_ckpt', tmp_path / 'cut' / 'latest.pth') == 0
    (a, log_a, args_a), (b, log_b, _) = weights_and_log(tmp_path / 'straight'), weights_and_log(tmp_path / 'cut')
    assert all(torch.equal(a[k], b[k]) for k in a) and log_a == log_b
    assert log_a[1]['robustness'] > 0 and 0 < log_a[1]['all_accepted'] <= 1 and 1 <= log_a[1]['accepted_copies'] <= 2
    assert {'num_noise_vec', 'epsilon', 'num_steps', 'lbd', 'confidence_mask', 'smoothed_predictions'} <= set(args_a)
    assert not {'gauss_num', 'eta', 'step_size', 'gamma'} & set(args_a)
    capsys.readouterr()
    assert run('--method', 'catrs', '--epochs', 1, '--ckptdir', tmp_path / 'none') == 2
    err = capsys.readouterr().err
    assert '--smoothed_predictions' in err and err.count('\n') == 1


def test_the_catrs_presets_are_the_authors_rows():
    for s, lbd in (('0.25', 0.5), ('0.50', 1.0), ('1.00', 2.0)):
        p = PRESETS[f'cifar10-catrs-{s}']
        assert {k: p[k] for k in ('method', 'dataset', 'input_layer', 'epochs', 'lr', 'lr_milestones', 'momentum',
                                  'weight_decay', 'num_noise_vec', 'epsilon', 'num_steps', 'lbd', 'batch_size',
                                  'sigma')} == \
            dict(method='catrs', dataset='cifar10', input_layer='normalize', epochs=150, lr=0.1, lr_milestones=[51, 101],
                 momentum=0.9, weight_decay=1e-4, num_noise_vec=4, epsilon=1.0, num_steps=4, lbd=lbd,
                 batch_size=256 // 4, sigma=float(s))
        assert 'confidence_mask' not in p
    assert PRESETS['digits-catrs-0.25']['method'] == 'catrs'


# --- the method table: a new method is one module ---------------------------------------------------------

def toy_step(model, x, y, noise, hyper, batch):
    """Cross-entropy on the noisy copies plus tau times the mean squared logit: a toy method."""
    logits = noisy(model, x, noise)
    ce, classification, _ = gaussian_loss(logits, y)
    penalty = hyper.tau * logits.pow(2).mean()
    return Step(ce + penalty, classification, penalty.detach(), logits, {'big': (logits.abs() > 5).sum()})


TOY = Method(name='toy', summary='a toy method added by a test', flags={'tau': Param(0.01, 'its weight', positive_float)},
             copies=None, figures=('big',), step=toy_step, hyper=lambda args, epoch: SimpleNamespace(tau=args.tau),
             log=lambda args, epoch, hyper, sums, images: {'big_logits': sums['big'] / images},
             scaling=lambda args: ('tau',))


def test_a_method_added_to_the_table_trains_resumes_exactly_and_records_only_its_flags(tmp_path, capsys):
    register(TOY)
    try:
        assert run('--method', 'toy', '--tau', 0.05, '--epochs', 2, '--ckptdir', tmp_path / 'straight') == 0
        assert run('--method', 'toy', '--tau', 0.05, '--epochs', 1, '--ckptdir', tmp_path / 'cut') == 0
        assert run('--method', 'toy', '--tau', 0.05, '--epochs', 2, '--ckptdir', tmp_path / 'cut', '--resume_ckpt',
                   tmp_path / 'cut' / 'latest.pth') == 0
        (a, log_a, record), (b, log_b, _) = weights_and_log(tmp_path / 'straight'), weights_and_log(tmp_path / 'cut')
        assert all(torch.equal(a[k], b[k]) for k in a) and log_a == log_b and 'big_logits' in log_a[0]
        assert record['tau'] == 0.05 and record['method'] == 'toy'
        assert not set(record) & {f for m in METHODS.values() if m is not TOY for f in m.flags}
        # its flag is refused with another method, and resuming with another value of it is refused
        capsys.readouterr()
        assert run('--method', 'gaussian', '--tau', 1, '--epochs', 1, '--ckptdir', tmp_path / 'x') == 2
        assert '--tau is a flag of toy, not of --method gaussian' in capsys.readouterr().err
        assert run('--method', 'toy', '--tau', 0.5, '--epochs', 3, '--ckptdir', tmp_path / 'cut', '--resume_ckpt',
                   tmp_path / 'cut' / 'latest.pth') == 2
        assert '--tau 0.05 there, 0.5 now' in capsys.readouterr().err
        assert 'toy: its weight (default 0.01)' in cli.build_parser().format_help().replace('\n', ' ').replace('  ', ' ')
    finally:
        del METHODS['toy']
