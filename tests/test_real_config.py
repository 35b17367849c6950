"""The promises hold in the configuration researchers run: loader workers with augmentation, BatchNorm,
torchrun, fp16, a resume on other hardware."""
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

import resume
import train
from methods import METHODS
from methods.attacks import scaled_per_image, smoothadv_attack
from checkpoint import Checkpoint
from conftest import ROOT, run_main
from data import EpochSampler, training_loader
from plumbing import devices, rng
from plumbing.devices import cpu_name
from plumbing.errors import UsageError
from plumbing.torchrun import SingleProcess


# --- resume with loader workers ---------------------------------------------------------------------

class Augmented(Dataset):
    """Ten items whose 'augmentation' draws from torch's, Python's and NumPy's generators, as a user's might."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item(), random.random(), float(np.random.rand())]), i


def epochs_of(loader, sampler, epochs):
    out = {}
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out[epoch] = torch.cat([x for x, _ in loader])
    return out


def test_with_workers_an_epochs_batches_depend_on_seed_and_epoch_only():
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    straight = epochs_of(*training_loader(Augmented(), batch_size=3, workers=2, seed=7), [1, 2, 3])
    resumed = epochs_of(*training_loader(Augmented(), batch_size=3, workers=2, seed=7), [3])  # fresh workers
    fewer = epochs_of(*training_loader(Augmented(), batch_size=3, workers=1, seed=7), [3])
    assert torch.equal(resumed[3], straight[3]) and torch.equal(fewer[3], straight[3])
    # the main process's generators, which draw the training noise, are untouched
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()
    # a new order and new augmentation every epoch: torch's DistributedSampler's order (seed + epoch), for one
    # process too, and every draw of a worker from (seed, epoch, index)
    for epoch in (1, 2, 3):
        assert straight[epoch][:, 0].long().tolist() == torch.randperm(10, generator=torch.Generator().manual_seed(
            7 + epoch)).tolist()
    first, second = (sorted(straight[e].tolist()) for e in (1, 2))
    assert all(a[0] == b[0] and a[1:] != b[1:] for a, b in zip(first, second))
    assert len({row[1] for row in straight[1].tolist()}) == 10
    # under torchrun the ranks' shares make up the permutation
    shares = [[i for _, i in EpochSampler(Augmented(), 7, rank, 2)] for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(10))


def imagenet_folder(root, classes=2, per_class=4, size=40):
    """ImageNet's layout (ROOT/train/CLASS/*.png, ROOT/val/CLASS/*.png) with a few random images."""
    from PIL import Image
    rng = np.random.RandomState(0)
    for split in ('train', 'val'):
        for c in range(classes):
            folder = root / split / f'n{c:08d}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    return root


def test_resume_with_workers_augmentation_and_batchnorm_is_bit_exact(tmp_path):
    # two minibatches an epoch, one for each worker; ResNet-50 at 224 x 224 makes each image cost a second
    root = imagenet_folder(tmp_path / 'imagenet', classes=2, per_class=2)
    common = ['--task', 'train', '--dataset', 'imagenet', '--root', root, '--arch', 'resnet50', '--method', 'gaussian',
              '--batch_size', 2, '--workers', 2, '--seed', 0, '--quiet', '--cert_from', 1000, '--lr', 0.01,
              '--start_img', 0, '--num_img', 1]
    # one thread each: the uninterrupted run and the first part of the other side by side, on two cores
    env = dict(os.environ, OMP_NUM_THREADS='1')
    runs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *map(str, common + extra)], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for extra in (['--epochs', 2, '--ckptdir', tmp_path / 'straight'],
                          ['--epochs', 1, '--ckptdir', tmp_path / 'stopped'])]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    rest = run_main(*common, '--epochs', 2, '--ckptdir', tmp_path / 'stopped',
                    '--resume_ckpt', tmp_path / 'stopped' / 'latest.pth', env=env)
    assert rest.returncode == 0, rest.stderr
    assert 'not be bit-exact' not in rest.stdout  # the same machine
    a = torch.load(tmp_path / 'straight' / 'latest.pth', weights_only=True)
    b = torch.load(tmp_path / 'stopped' / 'latest.pth', weights_only=True)
    # the weights and the BatchNorm buffers (running statistics, batches counted)
    assert a['net'].keys() == b['net'].keys() and any('running_mean' in k for k in a['net'])
    assert [k for k in a['net'] if not torch.equal(a['net'][k], b['net'][k])] == []
    momentum = [(s['momentum_buffer'], b['optimizer']['state'][p]['momentum_buffer'])
                for p, s in a['optimizer']['state'].items()]
    assert momentum and all(torch.equal(x, y) for x, y in momentum)
    assert [{k: v for k, v in r.items() if k not in ('seconds', 'noisy_images_per_second')}
            for r in a['history']] == [{k: v for k, v in r.items() if k not in ('seconds', 'noisy_images_per_second')}
                                       for r in b['history']]
    assert a['device'] == {'type': 'cpu', 'gpu': None, 'cpu': cpu_name()}


# --- torchrun: every rank holds rank 0's buffers after an epoch --------------------------------------------

def _rank(rank, world, folder):
    import torch.distributed as dist
    from plumbing.devices import Runner
    from plumbing.torchrun import Distributed
    torch.set_num_threads(1)  # a forked process: no OpenMP pool of the parent's to use
    dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=world)
    try:
        for share in (False, True):
            job = Distributed(rank, world)
            if not share:
                job.broadcast_buffers = lambda module: None  # what DDP alone leaves
            torch.manual_seed(0)  # the same initial network on both ranks
            net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                nn.Linear(4 * 6 * 6, 10))
            runner = Runner(net, 'cpu', 'fp32', 'contiguous', dist=job)
            torch.manual_seed(1 + rank)  # each rank its own data and noise
            batches = [(torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(3)]
            train.train_one_epoch(runner, batches, torch.optim.SGD(net.parameters(), lr=0.1),
                                  torch.amp.GradScaler('cpu', enabled=False), *train.step_setup('gaussian', 0.25),
                                  epoch=1, epochs=1, device=torch.device('cpu'), job=job, progress=False)
            torch.save(net.state_dict(), f'{folder}/{share}-{rank}.pt')
    finally:
        dist.destroy_process_group()


def test_after_an_epoch_every_rank_holds_rank_0s_batchnorm_buffers(tmp_path):
    import torch.multiprocessing as mp
    # two processes of a Gloo job, as torchrun starts them; forked, so nothing is imported again
    mp.start_processes(_rank, args=(2, str(tmp_path)), nprocs=2, start_method='fork')
    ranks = {share: [torch.load(tmp_path / f'{share}-{r}.pt', weights_only=True) for r in (0, 1)]
             for share in (False, True)}
    # DDP alone: the weights agree (gradients are averaged) but each rank's last forward left its own statistics
    alone = ranks[False]
    assert all(torch.equal(alone[0][k], alone[1][k]) for k in alone[0] if 'running' not in k)
    assert not torch.equal(alone[0]['1.running_mean'], alone[1]['1.running_mean'])
    # the epoch ends with rank 0's on every rank
    shared = ranks[True]
    assert all(torch.equal(shared[0][k], shared[1][k]) for k in shared[0])
    assert torch.equal(shared[0]['1.running_mean'], alone[0]['1.running_mean'])


# --- fp16: the attack's gradient, the skipped steps ---------------------------------------------------

class Half(nn.Module):
    """A network run in fp16 (CPU autocast), returning float32 logits as plumbing.devices.Runner does."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.autocast('cpu', dtype=torch.float16):
            return self.net(x).float()


def confident_net():
    """A small network that classifies everything as class 0 with a margin of ~30: softmax - one-hot ~1e-13."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():
        net[3].bias.copy_(torch.tensor([30.0] + [0.0] * 9))
    return net


def test_the_attacks_gradient_is_scaled_out_of_fp16s_underflow():
    net = confident_net()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)

    def input_gradient(model, scale):
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction='sum')
        at_logits, = torch.autograd.grad(loss, logits, retain_graph=True)
        assert 0 < at_logits.abs().max() < 1e-10  # float32 holds it
        grad, = torch.autograd.grad(logits, x, grad_outputs=scaled_per_image(at_logits) if scale else at_logits)
        return grad
    # unscaled, fp16 rounds it to zero (below 6e-8); scaled, it survives and points where fp32's does
    assert (input_gradient(Half(net), scale=False) == 0).all()

    def direction(grad):
        return grad.flatten(1) / grad.flatten(1).norm(dim=1, keepdim=True)
    half, full = direction(input_gradient(Half(net), scale=True)), direction(input_gradient(net, scale=False))
    assert ((half * full).sum(dim=1) > 0.999).all()
    # in fp32 the power of two changes no bit of the direction
    assert torch.equal(direction(input_gradient(net, scale=True)), full)
    # the attack in fp16 moves along gradients: no random direction
    noise = 0.25 * torch.randn(4, 2, 1, 8, 8)
    adv, random_directions = smoothadv_attack(Half(net), x.detach(), y, noise, epsilon=0.5, num_steps=3)
    assert int(random_directions) == 0 and not torch.equal(adv, x.detach())


def test_a_net_without_gradient_takes_random_directions_and_counts_them():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.zero_()  # the output does not depend on the input
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    adv, random_directions = smoothadv_attack(net, x, y, torch.zeros(3, 2, 1, 8, 8), epsilon=0.5, num_steps=4)
    assert int(random_directions) == 3 * 4
    moved = (adv - x).flatten(1).norm(dim=1)
    assert ((moved > 0) & (moved <= 0.5 + 1e-5)).all()
    # the epoch counts them, logs them and names them in its printed line
    figures = train.train_one_epoch(net, [(x, y)], torch.optim.SGD(net.parameters(), lr=0.1),
                                    torch.amp.GradScaler('cpu', enabled=False),
                                    *train.step_setup('smoothadv', 0.25, num_noise_vec=2, epsilon=0.5, num_steps=4), epoch=1, epochs=1,
                                    device=torch.device('cpu'), job=SingleProcess(), progress=False)
    assert figures['sums']['random_directions'] == 3 * 4 and figures['skipped_steps'] == 0
    entry = {'epoch': 1, 'lr': 0.1, 'seconds': 1.0, 'noisy_images_per_second': 6.0, **figures,
             'random_directions': int(figures['sums']['random_directions'])}
    assert train.epoch_line(entry, 1, METHODS['smoothadv']).endswith('noisy img/s  random attack directions 12 (zero gradient)')


def test_skipped_fp16_steps_are_counted_and_the_logged_gradient_norm_stays_finite():
    enabled = torch.amp.GradScaler('cpu', enabled=True)
    assert [float(v) for v in train.step_figures(torch.tensor(2.5), enabled)] == [2.5, 1.0, 0.0]
    assert [float(v) for v in train.step_figures(torch.tensor(math.inf), enabled)] == [0.0, 0.0, 1.0]
    assert [float(v) for v in train.step_figures(torch.tensor(math.nan), enabled)] == [0.0, 0.0, 1.0]
    # an epoch whose first step overflows: the scaler skips it, then backs off and the others are taken
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 40, backoff_factor=2.0 ** -30)
    batches = [(torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(3)]
    figures = train.train_one_epoch(Half(net), batches, torch.optim.SGD(net.parameters(), lr=0.1), scaler,
                                    *train.step_setup('gaussian', 0.25), epoch=1, epochs=1,
                                    device=torch.device('cpu'), job=SingleProcess(), progress=False)
    assert figures['skipped_steps'] == 1 and math.isfinite(figures['grad_norm']) and figures['grad_norm'] > 0
    json.dumps(figures, allow_nan=False)  # strict JSON
    entry = {'epoch': 1, 'lr': 0.1, 'seconds': 1.0, 'noisy_images_per_second': 24.0, **figures}
    assert train.epoch_line(entry, 1).endswith('  skipped steps 1 (fp16 overflow)')
    # all skipped: no mean to give, and null (not NaN) in the log
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 40, backoff_factor=0.5)
    figures = train.train_one_epoch(Half(net), batches, torch.optim.SGD(net.parameters(), lr=0.1), scaler,
                                    *train.step_setup('gaussian', 0.25), epoch=1, epochs=1,
                                    device=torch.device('cpu'), job=SingleProcess(), progress=False)
    assert figures['skipped_steps'] == 3 and figures['grad_norm'] is None


# --- resume on other hardware -----------------------------------------------------------------------

def rng_file(cuda_states, cuda_device=None):
    state = rng.rng_state(torch.device('cpu'))
    state['cuda'] = [torch.full((16,), i, dtype=torch.uint8) for i in range(cuda_states)]
    if cuda_device is not None:
        state['cuda_device'] = cuda_device
    return state


def test_a_resume_restores_the_state_of_its_own_gpu_whatever_the_gpus_it_sees(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device: restored.append((int(state[0]), device)))
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    gpu0, gpu1 = torch.device('cuda', 0), torch.device('cuda', 1)
    # written on 4 GPUs (version 1.0: which one trained is not recorded), resumed where one is seen: GPU 0's
    rng.set_rng_state(rng_file(4), gpu0, 'old.pth')
    assert restored == [(0, 0)]
    # the GPU that trained is recorded: its state goes to the GPU that continues
    restored.clear()
    rng.set_rng_state(rng_file(4, cuda_device=2), gpu0, 'new.pth')
    assert restored == [(2, 0)]
    # no state for this GPU: said in one line, not called damaged
    with pytest.raises(UsageError, match=r'^old.pth holds the CUDA random-number states of 1 GPU, and this process '
                                         r'trains on GPU 1 \(of the 1 it sees\): resume on one of GPUs 0..0'):
        rng.set_rng_state(rng_file(1), gpu1, 'old.pth')
    # on the CPU the GPUs' states are not used
    restored.clear()
    rng.set_rng_state(rng_file(4), torch.device('cpu'), 'new.pth')
    assert restored == []


def test_a_resume_on_another_device_model_says_it_will_not_be_bit_exact():
    def ckpt(device):
        return Checkpoint('ck.pth', 'project', {}, 3, content={} if device is None else {'device': device})
    here = torch.device('cpu')
    assert resume.device_note(ckpt(devices.device_record(here)), here) is None
    assert resume.device_note(ckpt(None), here) is None  # the file does not say
    note = resume.device_note(ckpt({'type': 'cuda', 'gpu': 'NVIDIA H100 80GB HBM3', 'cpu': cpu_name()}), here)
    assert note == (f'==> note: ck.pth was trained on NVIDIA H100 80GB HBM3, this run continues on the CPU '
                    f'({cpu_name() or "unnamed"}): the continuation will not be bit-exact')
