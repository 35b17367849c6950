import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def run_main(*args, timeout=600, env=None):
    """main.py as a user runs it: a fresh process; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def certify_digits(matdir, name, sigma=0.25, start_img=0, num_img=5, skip=10, N=200, N0=50, alpha=0.001,
                   mode='hard', checkpoint='digits-macer-0.25.pth', extra=()):
    """A real certification run of a shipped checkpoint on a few `digits` test images, in this process (fast:
    N samples per image): MATDIR/NAME.{json,mat,MODE.tsv,stats.jsonl}. Returns the JSON's path."""
    import main
    assert main.main(['--task', 'test', '--dataset', 'digits', '--sigma', str(sigma), '--start_img', str(start_img),
                      '--num_img', str(num_img), '--skip', str(skip), '--N0', str(N0), '--N', str(N), '--alpha',
                      str(alpha), '--certify_batch', '250', '--mode', mode, '--resume_ckpt',
                      os.path.join(ROOT, 'checkpoints', checkpoint), '--matdir', str(matdir), '--name', str(name),
                      '--quiet', *map(str, extra)]) == 0
    return os.path.join(str(matdir), f'{name}.json')


_MADE = {}


def made(model='macer', sigma=0.25, N=200):
    """A real certification run (hard mode, 20 digits test images) of the shipped `model` at `sigma` and `N`:
    (its folder, its ACR); each made once per test session."""
    import tempfile
    key = (model, sigma, N)
    if key not in _MADE:
        folder = tempfile.mkdtemp(prefix='macer-made-')
        certify_digits(folder, 'run', sigma=sigma, N=N, num_img=20, skip=10, checkpoint=f'digits-{model}-0.25.pth')
        _MADE[key] = (folder, json.load(open(os.path.join(folder, 'run.json')))['summary']['hard']['acr'])
    return _MADE[key]


def certification(matdir, name, model='macer', run_id=None, epoch=None, status='complete', **setting):
    """EPOCH.json with its logs, statistics and .mat, as a certification during training writes them: a real
    run of `model` (`made`), renamed NAME and recording the training run `run_id` and `epoch` (None: one that
    records no training run). Returns the run's ACR."""
    import shutil
    folder, value = made(model, **setting)
    for suffix in ('.hard.tsv', '.stats.jsonl', '.mat'):
        shutil.copy(os.path.join(folder, 'run' + suffix), os.path.join(str(matdir), f'{name}{suffix}'))
    record = json.load(open(os.path.join(folder, 'run.json')))
    record['status'] = status
    record['files'] = {'mat': f'{name}.mat', 'logs': {'hard': f'{name}.hard.tsv'}, 'stats': f'{name}.stats.jsonl',
                       'recomputations': f'{name}.recomputations.jsonl'}
    record['sha256'] = {f'{name}{k[len("run"):]}': v for k, v in record['sha256'].items()}
    record.pop('checkpoint', None)
    if run_id is not None:
        record['checkpoint'] = {'epoch': int(name) if epoch is None else epoch, 'run_id': run_id}
    with open(os.path.join(str(matdir), f'{name}.json'), 'w') as f:
        json.dump(record, f)
    return value


def snapshot(folder):
    """Every file under `folder` with its bytes and modification time: to show nothing was touched."""
    out = {}
    for base, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(base, n)
            if os.path.islink(p):
                out[os.path.relpath(p, folder)] = ('link', os.readlink(p))
                continue
            with open(p, 'rb') as f:
                out[os.path.relpath(p, folder)] = (f.read(), os.stat(p).st_mtime_ns)
    return out


@pytest.fixture(scope='session')
def digits_lenet(tmp_path_factory):
    """A LeNet trained briefly on `digits` under Gaussian noise (sigma 0.25), saved in the MACER format.

    Good enough that certification gives a mix of correct, wrong and abstained images.
    """
    import torch
    import torch.nn.functional as F
    from data import get_dataset
    from model import LeNet
    torch.manual_seed(0)
    train = get_dataset('digits', '', 'train')
    net = LeNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x_all, y_all = train.images, train.targets
    for _ in range(8):
        perm = torch.randperm(len(y_all))
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            x = x_all[b] + 0.25 * torch.randn_like(x_all[b])
            loss = F.cross_entropy(net(x), y_all[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp('ckpt') / 'lenet_digits.pth'
    torch.save({'net': net.state_dict(), 'epoch': 8}, path)
    return str(path)


def imagenet_folder(root, classes=2, per_class=4, size=(40, 48), seed=0):
    """An ImageNet-layout folder of small random PNGs (ROOT/train/CLASS/*.png, ROOT/val/CLASS/*.png):
    the real ImageFolder reader, with the real augmentation, without ImageNet. Returns `root`."""
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(seed)
    for split in ('train', 'val'):
        for c in range(classes):
            folder = os.path.join(str(root), split, f'n{c:08d}')
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                pixels = rng.randint(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f'{split}_{c}_{i}.png'))
    return str(root)


# a finder that makes `import torch` fail, as on a machine without it; runs SCRIPT ARGS as `python SCRIPT`
# does (its folder first on the path) and checks afterwards that torch was never imported
_NO_TORCH = ('import os, sys, runpy\n'
             'class NoTorch:\n'
             '    def find_spec(self, name, path=None, target=None):\n'
             '        if name == "torch" or name.startswith("torch."):\n'
             '            raise ModuleNotFoundError("no torch here")\n'
             'sys.meta_path.insert(0, NoTorch())\n'
             'sys.argv = sys.argv[1:]\n'
             'sys.path.insert(0, os.path.dirname(sys.argv[0]))\n'
             'try:\n'
             '    runpy.run_path(sys.argv[0], run_name="__main__")\n'
             'finally:\n'
             '    assert "torch" not in sys.modules\n')


def run_without_torch(script, *args):
    """`python SCRIPT ARGS` in a process where torch cannot be imported: the CompletedProcess (text)."""
    return subprocess.run([sys.executable, '-c', _NO_TORCH, str(script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)
