"""Sequential certification at fixed radii (`--radii`, rs/sequential.py): soundness measured on a model whose pA is
known exactly, agreement with CERTIFY, the prediction unchanged, and the run's files checked as CERTIFY's are."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import norm

from conftest import certify_digits, run_main
from plumbing.errors import UsageError
from rs.core import Smooth, image_generator
from rs.recompute import recompute
from rs.runs import read_run
from rs.sequential import Plan, certificate_of, certify_images, decide, look_levels, look_sizes, replay
from rs.stats import lower_confidence_bound, radius


class Margin(nn.Module):
    """Two classes, logits [0, x_0]: under noise of level sigma, P(class 1) = Phi(x_0 / sigma) exactly, and the
    exact certified radius of class 1 is x_0 (the distance to the boundary x_0 = 0)."""

    def forward(self, x):
        z = x.flatten(1)[:, 0]
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_schedule_is_fixed_by_N_and_spends_alpha_once():
    looks = look_sizes(100000)
    assert looks[0] == 100 and looks[-1] == 100000 and list(looks) == sorted(set(looks))
    assert all(b >= 1.5 * a - 1 for a, b in zip(looks, looks[1:-1]))
    for alpha in (0.001, 0.05):
        levels = look_levels(len(looks), alpha)
        assert math.isclose(sum(levels), alpha, rel_tol=1e-12) and levels[-1] == pytest.approx(0.8 * alpha)
    assert look_sizes(50) == (50,) and look_levels(1, 0.01) == (0.01,)


def test_decisions():
    plan = Plan.make([0.25, 0.5, 0.75], 0.25, 100000, 0.001)
    assert plan.radii == (0.0, 0.25, 0.5, 0.75)
    # every draw a success: radius 0.75 (pA >= Phi(3)) needs ln(level) / ln(Phi(3)) ~ 8500 draws, not 100000
    counts, k = [], 0
    while True:
        counts.append(plan.looks[k])
        if decide(plan, counts).done:
            break
        k += 1
    assert plan.looks[k] < 10000 and certificate_of(plan, 3, counts) == (3, 0.75)
    # pA ~ 0.1: abstains at the first look
    assert decide(plan, [10]).done and certificate_of(plan, 3, [10]) == (-1, 0.0)
    # at the last look the test decides whatever the counts
    many = [int(0.9 * n) for n in plan.looks]
    assert decide(plan, many).done
    # a kept history replays: stops where it stopped, and not before
    assert replay(plan, counts) == len(counts)


def _draw_counts(rng, plan, pA):
    counts, a, previous = [], 0, 0
    for n in plan.looks:
        a += rng.binomial(n - previous, pA)
        previous = n
        counts.append(a)
        if decide(plan, counts).done:
            return counts


def _false_share(plan, sigma, margins, reps, seed):
    """The share of simulated images (true radius m) that a plan certifies at a grid radius above m."""
    rng = np.random.default_rng(seed)
    wrong = 0
    for rep in range(reps):
        m = margins[rep % len(margins)]
        prediction, r = certificate_of(plan, 1, _draw_counts(rng, plan, norm.cdf(m / sigma)))
        wrong += prediction == 1 and r > m
    return wrong / reps


def test_soundness_on_a_model_with_known_pA():
    """The hard case: every image's pA just below the threshold of a grid radius, so each certificate of that
    radius is wrong. At alpha 0.05 over 2000 images of the real sampler (device batches shared by the images),
    the share of wrong certificates is at most alpha within its Monte Carlo error; and the same simulation
    catches a test that peeks without spending alpha (the level alpha at every look)."""
    sigma, alpha, N, N0 = 0.5, 0.05, 2000, 20
    grid = (0.1, 0.25, 0.5)
    plan = Plan.make(grid, sigma, N, alpha)
    margins = [r * (1 - 1e-6) for r in grid] + [-1e-6]  # just below each threshold (and below 1/2)
    images = 2000
    xs = [(i, torch.tensor([[[margins[i % len(margins)]]]], dtype=torch.float32), 1) for i in range(images)]
    smoothed = Smooth(Margin(), 2, sigma, 'cpu', 'hard')
    wrong, drawn = 0, 0
    for idx, label, counts0, cAHat, counts, _ in certify_images(
            smoothed, plan, iter(xs), N0, 500, lambda i: image_generator(7, i, 'cpu'), 2):
        m = margins[idx % len(margins)]
        prediction, r = certificate_of(plan, cAHat, counts)
        wrong += (prediction == 1 and r > m) or (prediction == 0 and m > 0)
        drawn += plan.looks[len(counts) - 1]
    share = wrong / images
    error = 3 * math.sqrt(alpha * (1 - alpha) / images)
    print(f'sequential test, pA at the thresholds: {wrong} of {images} certificates wrong ({share:.4f}; alpha '
          f'{alpha}); {drawn / images:.0f} estimation draws per image of N = {N}')
    assert share <= alpha + error
    # the simulation can fail: a test at level alpha at every look (no spending) is wrong far more often
    naive = dataclasses.replace(plan, levels=(alpha,) * len(plan.looks))
    naive_share = _false_share(naive, sigma, margins[:-1], 1500, seed=1)
    spent_share = _false_share(plan, sigma, margins[:-1], 1500, seed=1)
    print(f'simulated, pA at the thresholds: spent {spent_share:.4f}, naive {naive_share:.4f}')
    assert naive_share > alpha + 3 * math.sqrt(alpha * (1 - alpha) / 1500)
    assert spent_share <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 1500)


def test_agrees_with_certify_far_from_thresholds_and_keeps_the_prediction(tmp_path):
    """On the shipped MACER model: the same prediction on every image (the selection draws are CERTIFY's), and on
    every image whose CERTIFY radius is far from every grid radius, the same largest certified grid radius."""
    grid = (0.25, 0.5)
    fixed = certify_digits(tmp_path, 'fixed', num_img=30, skip=7, N=2000, N0=50)
    seq = certify_digits(tmp_path, 'seq', num_img=30, skip=7, N=2000, N0=50, extra=('--radii', *grid))
    stats = {}
    for name in ('fixed', 'seq'):
        with open(tmp_path / f'{name}.stats.jsonl') as f:
            stats[name] = {e['idx']: e['hard'] for e in map(json.loads, f)}
    assert stats['fixed'].keys() == stats['seq'].keys()
    with open(tmp_path / 'seq.hard.tsv') as f:
        rows = {int(c[0]): [int(c[2]), float(c[3])] for c in (line.split('\t') for line in f.read().splitlines()[1:])}
    agreed = 0
    for idx, e in stats['fixed'].items():
        s = stats['seq'][idx]
        assert (s['counts0'], s['cAHat']) == (e['counts0'], e['cAHat'])  # the prediction is CERTIFY's
        assert s['n'] <= 2000
        bound = lower_confidence_bound(e['nA'], e['n'], 0.001)
        r = radius(0.25, bound) if bound >= 0.5 else -1.0
        if all(abs(r - t) > 0.08 for t in (0.0, *grid)):
            expected = max((t for t in (0.0, *grid) if t <= r), default=None)
            wanted = [-1, 0.0] if expected is None else [e['cAHat'], expected]
            assert rows[idx] == wanted, (idx, r, rows[idx])
            agreed += 1
    assert agreed >= 5
    # the run says what its radius column is, and gives no ACR
    record = json.loads(open(seq).read())
    assert record['identity']['radii'] == [0.0, 0.25, 0.5] and record['summary']['hard']['acr'] is None
    assert 'largest radius of the grid' in record['radius_column']
    assert record['samples']['total'] < 30 * 2050


def test_readers_refuse_to_compute_an_acr_and_recompute_replays(tmp_path):
    seq = certify_digits(tmp_path, 'seq', num_img=8, skip=11, N=1000, N0=50, extra=('--radii', 0.25, 0.5))
    with pytest.raises(UsageError, match='sequential certification at the radii 0, 0.25, 0.5'):
        read_run(seq)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for argv in (['compare.py', seq, seq], ['plotcurves.py', seq], ['leaderboard.py', seq]):
        p = subprocess.run([sys.executable, os.path.join(root, 'visualize', argv[0]), *argv[1:], '--out',
                            str(tmp_path / 'x')], capture_output=True, text=True)
        assert p.returncode == 2 and 'no ACR, curve' in p.stderr and 'Traceback' not in p.stderr
    # at the run's alpha, the recomputation is the run
    result = recompute(seq)
    with open(tmp_path / 'seq.hard.tsv') as f:
        logged = [line.split('\t')[:5] for line in f.read().splitlines()[1:]]
    assert [[str(r.idx), str(r.label), str(r.predict), repr(r.radius), str(r.correct)] for r in result['rows']] == logged
    assert result['summary']['acr'] is None


def test_resume_and_edits(tmp_path):
    seq = certify_digits(tmp_path, 'seq', num_img=10, skip=9, N=1000, N0=50, extra=('--radii', 0.25, 0.5))
    files = {s: (tmp_path / f'seq.{s}').read_text() for s in ('hard.tsv', 'stats.jsonl')}
    # an interruption: the last three images lost, the JSON still "running"
    record = json.loads(open(seq).read())
    for s, keep in (('hard.tsv', 8), ('stats.jsonl', 7)):
        (tmp_path / f'seq.{s}').write_text(''.join(files[s].splitlines(keepends=True)[:keep]))
    running = {k: v for k, v in record.items() if k not in ('summary', 'sha256', 'seconds', 'samples')}
    (tmp_path / 'seq.json').write_text(json.dumps(dict(running, status='running')))
    certify_digits(tmp_path, 'seq', num_img=10, skip=9, N=1000, N0=50, extra=('--radii', 0.25, 0.5))
    assert (tmp_path / 'seq.stats.jsonl').read_text() == files['stats.jsonl']
    cut = (lambda text: [line.split('\t')[:5] for line in text.splitlines()])
    assert cut((tmp_path / 'seq.hard.tsv').read_text()) == cut(files['hard.tsv'])
    # other radii into the same files: refused
    p = run_main('--task', 'test', '--dataset', 'digits', '--sigma', '0.25', '--start_img', '0', '--num_img', '10',
                 '--skip', '9', '--N0', '50', '--N', '1000', '--certify_batch', '250', '--resume_ckpt',
                 'checkpoints/digits-macer-0.25.pth', '--matdir', str(tmp_path), '--name', 'seq', '--radii', '0.25',
                 '0.75')
    assert p.returncode == 2 and 'radii' in p.stderr and 'other arguments' in p.stderr
    # a look edited (its row kept): refused, naming the file
    lines = files['stats.jsonl'].splitlines(keepends=True)
    entry = json.loads(lines[0])
    entry['hard']['looks'] = entry['hard']['looks'][:-1]
    entry['hard']['n'] = look_sizes(1000)[len(entry['hard']['looks']) - 1]
    entry['hard']['nA'] = entry['hard']['looks'][-1]
    entry['drawn'] = 50 + entry['hard']['n']
    (tmp_path / 'seq.stats.jsonl').write_text(json.dumps(entry) + '\n' + ''.join(lines[1:]))
    with pytest.raises(UsageError, match='seq.stats.jsonl'):
        read_run(seq, sequential=True)


def _status(argv):
    """main.py's exit status for `argv`, run in this process (argparse's refusals exit)."""
    import main
    try:
        return main.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize('flags, message', [
    (('--radii', '0.25', '--mode', 'soft'), 'hard mode only'),
    (('--radii', '0.25', '--early_abstain', '100'), 'leave --early_abstain out'),
    (('--radii', '-1'), '--radii'),
    (('--shard', '4/3'), '--shard'),
    (('--shard', '2/0'), '--shard'),
    (('--shard', '3/30'), 'more than there are images'),
])
def test_bad_flags(tmp_path, capsys, flags, message):
    """Refused with one line and exit 2, in this process (the command line's own path: `test_bad_flags_as_run`)."""
    assert _status(['--task', 'test', '--dataset', 'digits', '--resume_ckpt', 'checkpoints/digits-macer-0.25.pth',
                    '--num_img', '5', '--start_img', '0', '--N', '100', '--matdir', str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1
    assert not os.listdir(tmp_path)


def test_bad_flags_as_run(tmp_path):
    p = run_main('--task', 'test', '--dataset', 'digits', '--resume_ckpt', 'checkpoints/digits-macer-0.25.pth',
                 '--num_img', '5', '--start_img', '0', '--N', '100', '--matdir', str(tmp_path), '--radii', '0.25',
                 '--mode', 'soft')
    assert p.returncode == 2 and 'hard mode only' in p.stderr and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_training_refuses_radii_and_shard(tmp_path, capsys):
    for flag in (('--radii', '0.25'), ('--shard', '1/2')):
        assert _status(['--task', 'train', '--preset', 'digits-gaussian-0.25', '--epochs', '1',
                        '--ckptdir', str(tmp_path / 'ckpt'), *flag]) == 2
        assert 'applies to the certifications of --task test' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'ckpt') or not os.listdir(tmp_path / 'ckpt')


def test_a_batchnorm_network_is_certified_in_eval_mode():
    """A network handed over in training mode (as a freshly built one is) is certified with its running
    statistics, as CERTIFY certifies it, and they are left as they were."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    plan = Plan.make([0.25, 0.5], 0.25, 500, 0.001)
    xs = [(i, torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(i)), 0) for i in range(4)]

    def run(model):
        return list(certify_images(Smooth(model, 3, 0.25, 'cpu', 'hard'), plan, iter(xs), 50, 128,
                                   lambda i: image_generator(3, i, 'cpu'), 3))
    net.train()
    trained_mode = run(net)
    assert not net.training
    assert all(torch.equal(v, kept[k]) for k, v in net.state_dict().items())
    assert [r[:5] for r in trained_mode] == [r[:5] for r in run(net.eval())]
    # CERTIFY's selection on the same noise: the same class
    for idx, _, counts0, cAHat, _, _ in trained_mode:
        e = Smooth(net, 3, 0.25, 'cpu', 'hard').evidence(xs[idx][1], 50, 10, 0.001, 128, image_generator(3, idx, 'cpu'))
        assert (e[0].cAHat, e[0].counts0) == (cAHat, counts0)
