"""Fashion-MNIST: torchvision's reader on idx files the test writes, Debian's copy unpacked into --root, the presets
of the published protocol, and the real data set end to end (skipped, saying why, where Debian's package is absent)."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

import data
from conftest import run_main
from data import FASHION_MNIST_FILES, get_dataset, unpack_debian_copy
from plumbing.errors import UsageError
from presets import PRESETS

REAL = data.DEBIAN_FASHION_MNIST
HAVE_REAL = all(os.path.isfile(os.path.join(REAL, f + '.gz')) for f in FASHION_MNIST_FILES)
NEEDS_REAL = pytest.mark.skipif(not HAVE_REAL, reason=f'Debian\'s Fashion-MNIST is not installed ({REAL}); '
                                                      f'install it with: apt-get install dataset-fashion-mnist')


def _idx_bytes(array):
    # the idx format: magic (0, 0, 0x08 = uint8, ndim), big-endian dimensions, then the bytes
    return (struct.pack('>BBBB', 0, 0, 8, array.ndim) + struct.pack('>' + 'I' * array.ndim, *array.shape) +
            array.astype(np.uint8).tobytes())


def _small_set(rng, train=30, test=12):
    arrays = {}
    for prefix, n in (('train', train), ('t10k', test)):
        arrays[f'{prefix}-images-idx3-ubyte'] = rng.integers(0, 256, (n, 28, 28))
        arrays[f'{prefix}-labels-idx1-ubyte'] = rng.integers(0, 10, (n,))
    return arrays


def test_reads_idx_files_in_torchvision_layout_as_x_over_255(tmp_path):
    raw = tmp_path / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    arrays = _small_set(np.random.default_rng(0))
    for name, array in arrays.items():
        (raw / name).write_bytes(_idx_bytes(array))
    test = get_dataset('fashion_mnist', str(tmp_path), 'test', download=False)
    assert len(test) == 12 and len(get_dataset('fashion_mnist', str(tmp_path), 'train', download=False)) == 30
    x, y = test[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    # the values torchvision's ToTensor gives: x / 255, exactly
    expected = torch.from_numpy(arrays['t10k-images-idx3-ubyte'][3].astype(np.float32)).div(255.0)
    assert torch.equal(x[0], expected) and y == int(arrays['t10k-labels-idx1-ubyte'][3])


def test_debian_copy_is_unpacked_into_root_when_root_lacks_the_files(tmp_path, monkeypatch):
    debian = tmp_path / 'debian'
    debian.mkdir()
    arrays = _small_set(np.random.default_rng(1), train=20, test=8)
    for name, array in arrays.items():
        with gzip.open(debian / (name + '.gz'), 'wb') as f:
            f.write(_idx_bytes(array))
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(debian))
    root = tmp_path / 'root'
    test = get_dataset('fashion_mnist', str(root), 'test', download=False)
    assert len(test) == 8
    assert sorted(os.listdir(root / 'FashionMNIST' / 'raw')) == sorted(FASHION_MNIST_FILES)
    # a second read takes --root's files and leaves Debian's alone
    assert len(get_dataset('fashion_mnist', str(root), 'train', download=False)) == 20
    assert unpack_debian_copy(str(tmp_path / 'x'), str(tmp_path / 'nothing-here')) is False


def test_neither_root_nor_debian_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'not-installed'))
    with pytest.raises(UsageError, match='apt-get install dataset-fashion-mnist'):
        get_dataset('fashion_mnist', str(tmp_path / 'root'), 'test', download=False)


def test_a_damaged_debian_copy_is_one_line(tmp_path, monkeypatch):
    debian = tmp_path / 'debian'
    debian.mkdir()
    for name in FASHION_MNIST_FILES:
        with gzip.open(debian / (name + '.gz'), 'wb') as f:
            f.write(b'not an idx file')
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(debian))
    with pytest.raises(UsageError, match='not an idx file'):
        get_dataset('fashion_mnist', str(tmp_path / 'root'), 'test', download=False)
    assert not os.listdir(tmp_path / 'root' / 'FashionMNIST' / 'raw')  # nothing half-written


def test_presets_follow_the_published_protocol():
    """alinlab/smoothing-catrs's Fashion-MNIST runs: LeNet, SGD lr 0.01, momentum 0.9, weight decay 1e-4, 90
    epochs with the rate falling after epochs 31 and 61 (StepLR(30).step(epoch) after each 0-based epoch), CAT-RS
    150 epochs (after 51 and 101); their batch of 256, cut into m chunks where their code chunks."""
    methods = ('gaussian', 'stability', 'macer', 'smoothadv', 'consistency', 'smoothmix', 'catrs')
    for method in methods:
        for s in ('0.25', '0.50', '1.00'):
            p = PRESETS[f'fashion_mnist-{method}-{s}']
            assert (p['dataset'], p['arch'], p['method'], p['sigma']) == ('fashion_mnist', 'lenet', method, float(s))
            assert (p['lr'], p['momentum'], p['weight_decay'], p['lr_factor']) == (0.01, 0.9, 1e-4, 0.1)
            epochs, milestones = (150, [51, 101]) if method == 'catrs' else (90, [31, 61])
            assert (p['epochs'], p['lr_milestones']) == (epochs, milestones)
            chunks = p.get('num_noise_vec', 1) if method in ('smoothadv', 'consistency', 'smoothmix', 'catrs') else 1
            assert p['batch_size'] * chunks == (64 if method == 'macer' else 256)
    assert PRESETS['fashion_mnist-macer-1.00']['lbd_after'] == 31


@NEEDS_REAL
def test_real_files_read_in_full():
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        train = get_dataset('fashion_mnist', root, 'train', download=False)
        test = get_dataset('fashion_mnist', root, 'test', download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert sorted(set(test.targets.tolist())) == list(range(10))
    assert np.bincount(train.targets.numpy()).tolist() == [6000] * 10


@NEEDS_REAL
def test_real_data_trains_and_certifies_through_the_command_line(tmp_path):
    """A little Gaussian training on the first 6000 real training images, then a certification of 20 real test
    images: the files are complete and checked, and the smoothed classifier beats chance (0.1) by far."""
    ckpt, mat = tmp_path / 'ckpt', tmp_path / 'mat'
    out = run_main('--task', 'train', '--preset', 'fashion_mnist-gaussian-0.25', '--root', tmp_path / 'data',
                   '--train_images', 6000, '--epochs', 2, '--ckptdir', ckpt, '--matdir', mat, '--cert_from', 1000,
                   '--quiet')
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(tmp_path / 'data' / 'FashionMNIST' / 'raw')) == sorted(FASHION_MNIST_FILES)
    out = run_main('--task', 'test', '--dataset', 'fashion_mnist', '--root', tmp_path / 'data', '--sigma', 0.25,
                   '--resume_ckpt', ckpt / 'latest.pth', '--start_img', 0, '--num_img', 20, '--skip', 500, '--N0', 50,
                   '--N', 1000, '--mode', 'hard', '--matdir', mat, '--name', 'real', '--quiet')
    assert out.returncode == 0, out.stderr
    from rs.runs import read_run
    run = read_run(str(mat / 'real.json'))
    assert run.checked == 'digests' and run.complete and run.radii.size == 20
    assert run.idx.tolist() == list(range(0, 10000, 500))
    assert float((run.radii >= 0).mean()) >= 0.5  # chance is 0.1; 2 epochs on 6000 images give about 0.8
    assert run.dataset == 'fashion_mnist' and run.sigma == 0.25 and run.N == 1000
