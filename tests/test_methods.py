"""Stability training, Consistency regularization and SmoothMix (docs/METHOD.md): each loss against its
formula written out here image by image, values and gradients in float64; SmoothMix's whole step (attack,
mixing, loss) against the same written out on a fixed small network; exact resume; what a record keeps."""
import json

import pytest
import torch
import torch.nn as nn

import cli
import main
import train
from methods.attacks import soft_pgd
from methods.losses import consistency_loss, smoothmix_loss, stability_loss
from conftest import ROOT
from presets import PRESETS

TOL = 1e-6


def softmax(z):
    e = torch.exp(z - z.max())
    return e / e.sum()


def kl(q, p):
    """KL(q || p) of two distributions over the classes, 0 log 0 = 0."""
    return sum(q[c] * (torch.log(q[c]) - torch.log(p[c])) for c in range(len(q)) if q[c] > 0)


def entropy(q):
    return -sum(q[c] * torch.log(q[c]) for c in range(len(q)) if q[c] > 0)


def cross_entropy(q, p):
    """CE(q, p) = -sum_c q_c log p_c: the soft target q, the prediction p."""
    return -sum(q[c] * torch.log(p[c]) for c in range(len(q)))


def reference_stability(clean, noisy, y, lbd):
    """Li et al.'s stability training as Jeong and Shin ran it: (1/n) sum_i [CE(f(x_i), y_i) + lbd * (1/k) sum_j
    CE(softmax f(x_i), softmax f(x_i + d_ij))]."""
    n, k = noisy.shape[:2]
    cl = sum(-torch.log(softmax(clean[i])[y[i]]) for i in range(n)) / n
    rob = lbd * sum(cross_entropy(softmax(clean[i]), softmax(noisy[i, j])) for i in range(n) for j in range(k)) / (n * k)
    return cl + rob, cl, rob


def reference_consistency(z, y, lbd, eta):
    """Jeong and Shin 2020: (1/nm) sum_ij CE(z_ij, y_i) + (1/n) sum_i [lbd (1/m) sum_j KL(p_i || p_ij) + eta H(p_i)]."""
    n, m = z.shape[:2]
    cl = sum(-torch.log(softmax(z[i, j])[y[i]]) for i in range(n) for j in range(m)) / (n * m)
    rob = 0
    for i in range(n):
        p = [softmax(z[i, j]) for j in range(m)]
        p_mean = sum(p) / m
        rob = rob + lbd * sum(kl(p_mean, pj) for pj in p) / m + eta * entropy(p_mean)
    return cl + rob / n, cl, rob / n


def reference_smoothmix(z, z_mix, y, lam, eta):
    """Jeong et al. 2021: (1/nm) sum_ij CE(z_ij, y_i) + eta (1/nm) sum_ij 1[argmax p_i = y_i] KL(t_i || softmax z_mix_ij),
    p_i the mean softmax of the clean copies, t_i = (1 - lam_i) p_i + lam_i / C."""
    n, m, C = z.shape
    cl = sum(-torch.log(softmax(z[i, j])[y[i]]) for i in range(n) for j in range(m)) / (n * m)
    rob = 0
    for i in range(n):
        p_mean = sum(softmax(z[i, j]) for j in range(m)) / m
        if int(p_mean.detach().argmax()) != int(y[i]):
            continue
        t = (1 - lam[i]) * p_mean + lam[i] / C
        rob = rob + sum(kl(t, softmax(z_mix[i, j])) for j in range(m))
    rob = eta * rob / (n * m)
    return cl + rob, cl, rob


def compare(mine, ref, inputs):
    """The largest absolute difference between the two implementations' values and gradients."""
    worst = max(abs(float(a.detach()) - float(b.detach())) for a, b in zip(mine, ref))
    for g_mine, g_ref in zip(torch.autograd.grad(mine[0], inputs), torch.autograd.grad(ref[0], inputs)):
        worst = max(worst, float((g_mine - g_ref).abs().max()))
    return worst


def random_logits(*shape, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)


@pytest.mark.parametrize('seed', [0, 1])
def test_stability_loss_equals_the_formula(seed):
    clean, noisy = random_logits(6, 5, seed=seed), random_logits(6, 1, 5, seed=seed + 10)
    y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(seed))
    mine = stability_loss(clean, noisy, y, lbd=2.0)
    assert compare(mine, reference_stability(clean, noisy, y, 2.0), (clean, noisy)) < TOL
    # the term is a cross-entropy, KL(p || q) + H(p): not KL alone, whose gradient at the clean logits differs
    p = torch.softmax(clean, 1)
    as_kl = 2.0 * sum(kl(p[i], torch.softmax(noisy[i, 0], 0)) for i in range(6)) / 6
    assert float((mine[2] - as_kl).detach()) == pytest.approx(2.0 * float(sum(entropy(p[i]) for i in range(6)).detach() / 6), rel=1e-12)


@pytest.mark.parametrize('seed,m', [(0, 2), (1, 4), (2, 1)])
def test_consistency_loss_equals_the_formula(seed, m):
    z = random_logits(5, m, 7, seed=seed)
    y = torch.randint(0, 7, (5,), generator=torch.Generator().manual_seed(seed))
    mine = consistency_loss(z, y, lbd=10.0, eta=0.5)
    assert compare(mine, reference_consistency(z, y, 10.0, 0.5), (z,)) < TOL
    # eta = lambda is the code's 'xent' form: lambda (1/m) sum_j CE(p_i, p_ij), averaged over the images
    xent = consistency_loss(z, y, lbd=3.0, eta=3.0)[2]
    p = torch.softmax(z, 2)
    direct = 3.0 * sum(cross_entropy(p[i].mean(0), p[i, j]) for i in range(5) for j in range(m)) / (5 * m)
    assert float(xent.detach()) == pytest.approx(float(direct.detach()), rel=1e-12)


@pytest.mark.parametrize('seed', [0, 1])
def test_smoothmix_loss_equals_the_formula(seed):
    z, z_mix = random_logits(8, 2, 6, seed=seed, scale=1.0), random_logits(8, 2, 6, seed=seed + 10)
    y = torch.softmax(z.detach(), 2).mean(1).argmax(1)
    y[:3] = (y[:3] + 1) % 6  # three points the smoothed classifier gets wrong: the mask drops them
    lam = torch.rand(8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / 2
    mine = smoothmix_loss(z, z_mix, y, lam, eta=5.0)
    assert compare(mine, reference_smoothmix(z, z_mix, y, lam, 5.0), (z, z_mix)) < TOL
    assert float(mine[2].detach()) > 0


def test_a_mean_probability_of_exactly_zero_leaves_the_gradients_finite():
    # float32 softmax of logits 200 apart underflows to 0: 0 log 0 = 0, and its gradient 0 (the authors' PyTorch)
    z = torch.tensor([[[200.0, 0.0, 0.0], [200.0, 0.0, 1.0]]], requires_grad=True)
    y = torch.tensor([0])
    for loss in (consistency_loss(z, y, lbd=10.0, eta=0.5)[0],
                 smoothmix_loss(z, z.detach().flip(2).requires_grad_(), y, torch.zeros(1), eta=5.0)[0]):
        grad, = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


class Tiny(nn.Module):
    """A fixed small network on 1x4x4 images, float64."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.fc1 = nn.Linear(16, 12).double()
        self.fc2 = nn.Linear(12, 4).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def reference_smoothed_ce_gradient(net, x, y, noise):
    """d/dx of sum_i -log(mean_j softmax f(x_i + d_ij)[y_i]), written out."""
    x = x.detach().requires_grad_(True)
    n, m = noise.shape[:2]
    loss = sum(-torch.log(sum(softmax(net((x[i] + noise[i, j])[None])[0]) for j in range(m))[y[i]] / m)
               for i in range(n))
    return torch.autograd.grad(loss, x)[0]


def renorm(v, radius):
    """v scaled to L2 norm `radius` where longer, as torch.renorm does (with its 1e-7)."""
    norm = float(v.norm())
    return v * (radius / (norm + 1e-7)) if norm > radius else v


def reference_smoothmix_step(net, x, y, sigma, m, T, alpha, eta, mix_step, w, maxnorm):
    """SmoothMix's step from its description (docs/METHOD.md, "SmoothMix"), drawing as `training_step` does:
    the noise, then the mixing coefficients."""
    n = x.shape[0]
    noise = torch.randn((n, m, *x.shape[1:]), dtype=x.dtype) * sigma
    lam = torch.rand(n, dtype=x.dtype) / 2
    adv, start = x.clone(), x.clone()
    for t in range(T):
        if t == mix_step:
            start = adv.clone()
        g = reference_smoothed_ce_gradient(net, adv, y, noise)
        for i in range(n):
            adv[i] = adv[i] + alpha * g[i] / (g[i].norm() + 1e-8)
            if maxnorm is not None:
                adv[i] = x[i] + renorm(adv[i] - x[i], maxnorm)
        adv = adv.clamp(0, 1)
    for i in range(n):
        start[i] = (x[i] + renorm(start[i] - x[i], alpha * mix_step * w)).clamp(0, 1)
    # the cross-entropy and the smoothed prediction at the clean end of the mixup, as their code
    z = torch.stack([torch.stack([net((start[i] + noise[i, j])[None])[0] for j in range(m)]) for i in range(n)])
    mix = [(1 - lam[i]) * start[i] + lam[i] * adv[i] for i in range(n)]
    z_mix = torch.stack([torch.stack([net((mix[i] + noise[i, j])[None])[0] for j in range(m)]) for i in range(n)])
    return reference_smoothmix(z, z_mix, y, lam, eta * w)


@pytest.mark.parametrize('mix_step,w,maxnorm', [(0, 1.0, None), (1, 0.5, 0.6)])
def test_the_smoothmix_step_on_a_fixed_network_equals_its_description(mix_step, w, maxnorm):
    net = Tiny()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    # w = min(1, epoch / warmup): 1 in epoch 1 with warm-up 1, 1/2 with warm-up 2
    step = train.step_setup('smoothmix', 0.25, num_noise_vec=2, num_steps=3, step_size=0.4, eta=5.0, mix_step=mix_step,
                            maxnorm=maxnorm, warmup=round(1 / w))
    torch.manual_seed(7)
    out = train.training_step(net, x, y, *step)
    mine = (out.loss, out.classification, out.robustness)
    torch.manual_seed(7)
    ref = reference_smoothmix_step(net, x, y, 0.25, 2, 3, 0.4, 5.0, mix_step, w, maxnorm)
    params = tuple(net.parameters())
    assert compare(mine, ref, params) < TOL
    assert float(mine[2].detach()) > 0 and net.training and all(p.grad is None for p in params)


def test_consistency_on_smoothadv_points_is_their_pgd_then_the_loss():
    net = Tiny()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    eps, T = 0.5, 3
    step = train.step_setup('consistency', 0.25, num_noise_vec=2, lbd=1.0, epsilon=eps, num_steps=T, eta=0.5,
                            adv_training=True, warmup=1)
    torch.manual_seed(4)
    out = train.training_step(net, x, y, *step)
    mine = (out.loss, out.classification, out.robustness)
    torch.manual_seed(4)
    noise = torch.randn((4, 2, 1, 4, 4), dtype=x.dtype) * 0.25
    adv = x.clone()
    for _ in range(T):  # their attack: the mean over the images, steps of 2 eps / T, project, then clamp
        g = reference_smoothed_ce_gradient(net, adv, y, noise) / 4
        for i in range(4):
            adv[i] = x[i] + renorm(adv[i] + 2 * eps / T * g[i] / (g[i].norm() + 1e-8) - x[i], eps)
        adv = adv.clamp(0, 1)
    z = torch.stack([torch.stack([net((adv[i] + noise[i, j])[None])[0] for j in range(2)]) for i in range(4)])
    assert compare(mine, reference_consistency(z, y, 1.0, 0.5), tuple(net.parameters())) < TOL
    # the point kept at step 1 is the first iterate of the same attack
    torch.manual_seed(4)
    noise = torch.randn((4, 2, 1, 4, 4), dtype=x.dtype) * 0.25
    end, first = soft_pgd(net, x, y, noise, step_size=0.3, num_steps=2, keep_step=1)
    assert torch.equal(first, soft_pgd(net, x, y, noise, step_size=0.3, num_steps=1)[0])


def test_stability_runs_the_clean_batch_then_the_noisy_one_through_batchnorm():
    bn = nn.BatchNorm1d(16, momentum=1.0).double()  # momentum 1: the running mean is the last batch's mean
    net = nn.Sequential(nn.Flatten(), bn, nn.Linear(16, 3).double())
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    torch.manual_seed(0)
    out = train.training_step(net, x, torch.zeros(6, dtype=torch.long), *train.step_setup('stability', 0.5, lbd=2.0))
    logits, rob = out.logits, out.robustness
    torch.manual_seed(0)
    noise = torch.randn((6, 1, 1, 4, 4), dtype=x.dtype) * 0.5
    assert torch.allclose(bn.running_mean, (x + noise[:, 0]).flatten(1).mean(0), atol=1e-12)
    assert logits.shape == (6, 1, 3) and float(rob.detach()) > 0


FAST = ['--task', 'train', '--dataset', 'digits', '--batch_size', '200', '--lr', '0.05', '--quiet']
NEW = {'stability': ['--lbd', 2],
       'consistency': ['--num_noise_vec', 2, '--lbd', 10, '--eta', 0.5],
       # one noise draw keeps the attacks cheap; the tests above check the m-copy arithmetic
       'consistency-adv': ['--method', 'consistency', '--adv_training', '--num_noise_vec', 1, '--epsilon', 0.5,
                           '--num_steps', 2, '--warmup', 2],
       'smoothmix': ['--num_noise_vec', 1, '--num_steps', 2, '--step_size', 0.5, '--eta', 5, '--mix_step', 1,
                     '--warmup', 2]}


def run(*args):
    return main.main([str(a) for a in [*FAST, *args]])


@pytest.mark.parametrize('name', list(NEW))
def test_each_new_method_stops_and_resumes_exactly(tmp_path, name, capsys):
    flags = NEW[name] if name == 'consistency-adv' else ['--method', name, *NEW[name]]
    assert run(*flags, '--epochs', 2, '--ckptdir', tmp_path / 'straight') == 0
    assert run(*flags, '--epochs', 1, '--ckptdir', tmp_path / 'cut') == 0
    assert run(*flags, '--epochs', 2, '--ckptdir', tmp_path / 'cut', '--resume_ckpt', tmp_path / 'cut' / 'latest.pth') == 0
    a, b = (torch.load(tmp_path / d / 'latest.pth', weights_only=True) for d in ('straight', 'cut'))
    assert all(torch.equal(a['net'][k], b['net'][k]) for k in a['net'])
    log = [{k: v for k, v in json.loads(line).items() if k not in ('seconds', 'noisy_images_per_second')}
           for line in (tmp_path / 'cut' / 'log.jsonl').read_text().splitlines()]
    assert log == [{k: v for k, v in json.loads(line).items() if k not in ('seconds', 'noisy_images_per_second')}
                   for line in (tmp_path / 'straight' / 'log.jsonl').read_text().splitlines()]
    assert log[1]['robustness'] > 0
    if name == 'smoothmix':  # eta warms up over --warmup 2 epochs
        assert [r['eta'] for r in log] == [2.5, 5.0]
    if name == 'consistency-adv':
        assert [r['epsilon'] for r in log] == [0.25, 0.5]
    # resuming with another value of a new flag is refused, in one line
    other = {'stability': ['--lbd', 3], 'consistency': ['--eta', 0.7], 'consistency-adv': ['--epsilon', 0.4],
             'smoothmix': ['--mix_step', 0]}[name]
    capsys.readouterr()
    assert run(*flags, *other, '--epochs', 3, '--ckptdir', tmp_path / 'cut',
               '--resume_ckpt', tmp_path / 'cut' / 'latest.pth') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'was trained with other arguments' in err[0] and other[0] in err[0]


def record(*argv):
    return cli.record(cli.resolve(cli.parse_args(['--dataset', 'digits', *map(str, argv)])))


def test_records_keep_the_flags_of_their_method_and_the_defaults_are_the_authors():
    stability = record('--method', 'stability')
    assert stability['lbd'] == 2.0 and not {'gauss_num', 'eta', 'num_noise_vec', 'epsilon', 'step_size'} & set(stability)
    consistency = record('--method', 'consistency')
    assert (consistency['lbd'], consistency['eta'], consistency['num_noise_vec'], consistency['adv_training']) == \
        (10.0, 0.5, 1, False)
    assert not {'epsilon', 'num_steps', 'warmup', 'gauss_num', 'step_size'} & set(consistency)
    adv = record('--method', 'consistency', '--adv_training')
    assert (adv['epsilon'], adv['num_steps'], adv['warmup']) == (2.0, 4, 10)
    smoothmix = record('--method', 'smoothmix')
    assert {k: smoothmix[k] for k in ('eta', 'num_steps', 'step_size', 'mix_step', 'maxnorm', 'warmup',
                                      'num_noise_vec')} == dict(eta=1.0, num_steps=8, step_size=1.0, mix_step=0,
                                                                maxnorm=None, warmup=10, num_noise_vec=1)
    assert not {'lbd', 'epsilon', 'adv_training', 'gauss_num'} & set(smoothmix)
    # the older methods' records are what they were: none of the new flags, their own defaults
    for method in ('macer', 'gaussian', 'smoothadv'):
        assert not {'eta', 'adv_training', 'step_size', 'mix_step', 'maxnorm'} & set(record('--method', method))
    assert record('--method', 'macer')['lbd'] == 12.0
    assert {k: record('--method', 'smoothadv')[k] for k in ('epsilon', 'num_steps', 'warmup')} == \
        dict(epsilon=0.25, num_steps=10, warmup=1)


# the authors' Cifar-10 rows (their code and command lines, docs/METHOD.md), transcribed
JEONG = dict(dataset='cifar10', input_layer='normalize', epochs=150, lr=0.1, lr_milestones=[51, 101], momentum=0.9,
             weight_decay=1e-4)
ROWS = {'stability': {'0.25': dict(lbd=2.0), '0.50': dict(lbd=2.0), '1.00': dict(lbd=1.0)},
        'consistency': {s: dict(num_noise_vec=2, lbd=lbd, eta=0.5) for s, lbd in (('0.25', 20.0), ('0.50', 10.0),
                                                                                  ('1.00', 10.0))},
        'smoothmix': {s: dict(num_noise_vec=2, num_steps=4, step_size=a, eta=5.0, mix_step=0, warmup=10)
                      for s, a in (('0.25', 0.5), ('0.50', 1.0), ('1.00', 2.0))}}


def test_the_cifar10_presets_are_the_authors_rows():
    for method, rows in ROWS.items():
        for s, row in rows.items():
            p = PRESETS[f'cifar10-{method}-{s}']
            assert {k: p[k] for k in (*JEONG, *row)} == {**JEONG, **row}, (method, s)
            assert p['batch_size'] * p.get('num_noise_vec', 1) == 256 and p['sigma'] == float(s)
            if method == 'smoothmix':
                assert PRESETS[f'cifar10-smoothmix-{s}-onestep'] == {**p, 'mix_step': 1}
    for s, (eps, m, lbd) in {'0.25': (255 / 256, 4, 2.0), '0.50': (2.0, 2, 1.0), '1.00': (2.0, 2, 1.0)}.items():
        p = PRESETS[f'cifar10-consistency-{s}-smoothadv']
        assert (p['adv_training'], p['epsilon'], p['num_noise_vec'], p['lbd'], p['num_steps'], p['warmup'],
                p['batch_size']) == (True, eps, m, lbd, 10, 10, 256 // m)
    # the digits presets: the demo's schedule and LeNet, no certification during training
    for method in ('stability', 'consistency', 'smoothmix'):
        args = cli.parse_args(['--preset', f'digits-{method}-0.25'])
        assert (args.epochs, args.lr, args.batch_size, args.lr_milestones, args.cert_from > args.epochs) == \
            (30, 0.01, 32, [20], True)


DDP_SCRIPT = '''
import sys
sys.path.insert(0, sys.argv[1])
import torch
import train
from model import LeNet
from plumbing.devices import Runner
from plumbing.torchrun import Distributed

job = Distributed.from_environment('cpu')
torch.manual_seed(0)
net = LeNet()
twin = LeNet()
twin.load_state_dict(net.state_dict())
runner, alone = Runner(net, 'cpu', dist=job), Runner(twin, 'cpu')
g = torch.Generator().manual_seed(job.rank)
x, y = torch.rand(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)
for step in (train.step_setup('stability', 0.25, lbd=2.0),
             train.step_setup('smoothmix', 0.25, num_noise_vec=2, num_steps=2, step_size=0.5, eta=5.0, mix_step=1,
                              warmup=1)):
    grads = []
    for net in (runner, alone):
        net.zero_grad()
        torch.manual_seed(10 + job.rank)
        train.training_step(net, x, y, *step).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    mean = job.all_reduce_sum(grads[1].clone()) / job.world
    if job.rank == 0:
        print(step[0].name, float((grads[0] - mean).abs().max()), float(mean.abs().max()))
job.close()
'''


def test_under_torchrun_two_forward_passes_and_the_attack_give_the_mean_gradient(tmp_path):
    # Stability and SmoothMix run the network twice through DistributedDataParallel before one backward
    # pass, and SmoothMix attacks through the unsynchronised network: the step's gradient must be the
    # mean of the ranks' own gradients, as one process computes them
    from test_distributed import torchrun
    script = tmp_path / 'ddp_step.py'
    script.write_text(DDP_SCRIPT)
    r = torchrun(ROOT, script=script, timeout=120)
    assert r.returncode == 0, r.stderr
    results = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in r.stdout.splitlines()}
    assert set(results) == {'stability', 'smoothmix'}
    for difference, scale in results.values():
        assert difference <= 1e-6 * scale and scale > 0
